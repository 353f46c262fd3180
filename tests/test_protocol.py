"""`ferry._protocol`: msgpack frames (encode/decode), server addresses (`parse_url`), and
`FrameSocket`, the blocking framed socket containers use, over a local socket pair."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from typing import Iterator

import pytest

from ferry._protocol import (
    MAX_FRAME,
    FrameSocket,
    decode,
    encode,
    error_payload,
    hello,
    make_url,
    parse_url,
    read_frame,
)
from ferry.exception import ConnectionError, InvalidError

MESSAGES = [
    {"t": "req", "id": 1, "m": "function.call", "a": {"args": b"\x80\x05pickled", "n": None}},
    {"t": "res", "id": 2, "ok": False, "e": {"type": "InvalidError", "msg": "bad"}},
    {"t": "push", "k": "log", "lines": ["a", "b"], "ratio": 0.25, "flag": True},
    {1: "integer keys", "nested": {"deep": [1, {"x": b""}]}},
]


@pytest.fixture
def pair() -> Iterator[tuple[FrameSocket, FrameSocket]]:
    left, right = socket.socketpair()
    left.settimeout(60)
    right.settimeout(60)
    a, b = FrameSocket(left), FrameSocket(right)
    yield a, b
    a.close()
    b.close()


# ------------------------------------------------------------------ encode / decode


@pytest.mark.parametrize("message", MESSAGES)
def test_encode_decode_round_trip(message):
    frame = encode(message)
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - 4
    assert decode(frame[4:]) == message


def test_bytes_and_strings_stay_distinct():
    decoded = decode(encode({"s": "text", "b": b"text"})[4:])
    assert decoded == {"s": "text", "b": b"text"}
    assert type(decoded["s"]) is str and type(decoded["b"]) is bytes


def test_hello_carries_the_protocol_version_and_role():
    message = hello("container", token="abc")
    assert message["t"] == "hello" and message["role"] == "container" and message["token"] == "abc"
    assert isinstance(message["v"], int)


def test_error_payload_names_the_type_and_message():
    assert error_payload(InvalidError("bad option")) == {"type": "InvalidError", "msg": "bad option"}


# ------------------------------------------------------------------ parse_url


@pytest.mark.parametrize("url, expected", [
    ("ferry://h:1", ("h", 1)),
    ("h:1", ("h", 1)),
    ("ferry://127.0.0.1:8470", ("127.0.0.1", 8470)),
    ("localhost:65535", ("localhost", 65535)),
    ("ferry://[::1]:5", ("::1", 5)),
])
def test_parse_url_accepts_ferry_urls_and_host_port(url, expected):
    assert parse_url(url) == expected


def test_make_url_round_trips_through_parse_url():
    assert parse_url(make_url("10.0.0.2", 9000)) == ("10.0.0.2", 9000)


@pytest.mark.parametrize("url", [
    "http://h:1", "tcp://h:1", "h", "ferry://h", ":1", "ferry://:1", "", "ferry://h:0",
])
def test_parse_url_rejects_other_addresses(url):
    with pytest.raises(InvalidError, match=r"expected ferry://HOST:PORT"):
        parse_url(url)


@pytest.mark.parametrize("url", ["h:abc", "ferry://h:99999", "ferry://h:-1"])
def test_parse_url_rejects_bad_ports_as_invalid(url):
    with pytest.raises(InvalidError, match=r"expected ferry://HOST:PORT"):
        parse_url(url)


# ------------------------------------------------------------------ FrameSocket


def test_frames_travel_both_ways(pair):
    a, b = pair
    for message in MESSAGES:
        a.send(message)
        assert b.recv() == message
    b.send({"t": "res", "id": 9, "ok": True, "r": "done"})
    assert a.recv() == {"t": "res", "id": 9, "ok": True, "r": "done"}


def test_several_frames_in_one_write_are_received_one_by_one(pair):
    a, b = pair
    a.send_raw(b"".join(encode(m) for m in MESSAGES))
    assert [b.recv() for _ in MESSAGES] == MESSAGES


def test_frame_written_a_byte_at_a_time_is_reassembled(pair):
    a, b = pair
    frame = encode(MESSAGES[0])
    received: list[dict] = []
    reader = threading.Thread(target=lambda: received.append(b.recv()))
    reader.start()
    for i in range(len(frame)):
        a.send_raw(frame[i:i + 1])
    reader.join(timeout=60)
    assert received == [MESSAGES[0]]


def test_five_megabyte_frame_split_across_reads(pair):
    a, b = pair
    payload = bytes(range(256)) * (5 * 1024 * 1024 // 256)
    big = {"t": "push", "k": "blob", "data": payload}
    errors: list[BaseException] = []

    def send() -> None:
        try:
            a.send(big)  # blocks until the reader drains the socket buffer
            a.send({"t": "push", "k": "after"})
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            errors.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    received = b.recv()
    following = b.recv()
    sender.join(timeout=60)
    assert errors == []
    assert received["data"] == payload
    assert following == {"t": "push", "k": "after"}


def test_peer_closing_raises_connection_error(pair):
    a, b = pair
    a.send_raw(encode(MESSAGES[0])[:10])  # half a frame, then the peer goes away
    a.close()
    with pytest.raises(ConnectionError, match="closed the connection"):
        b.recv()


def test_connect_to_a_closed_port_raises_connection_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionError, match="Cannot reach the Ferry server"):
        FrameSocket.connect(f"ferry://127.0.0.1:{port}", timeout=10)


def test_connect_and_exchange_frames_over_tcp():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        client = FrameSocket.connect(make_url("127.0.0.1", port), timeout=10)
        conn, _ = listener.accept()
        server = FrameSocket(conn)
        try:
            client.send(hello("container"))
            assert server.recv()["t"] == "hello"
            server.send({"t": "welcome"})
            assert client.recv() == {"t": "welcome"}
        finally:
            client.close()
            server.close()


# ------------------------------------------------------------------ asyncio reader


def test_read_frame_reads_frames_from_a_stream_reader():
    async def scenario() -> list[dict]:
        reader = asyncio.StreamReader()
        data = b"".join(encode(m) for m in MESSAGES)
        reader.feed_data(data[:7])
        reader.feed_data(data[7:])
        reader.feed_eof()
        return [await read_frame(reader) for _ in MESSAGES]

    assert asyncio.run(scenario()) == MESSAGES


def test_read_frame_rejects_an_oversized_frame():
    async def scenario() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(struct.pack(">I", MAX_FRAME + 1))
        reader.feed_eof()
        await read_frame(reader)

    with pytest.raises(ConnectionError, match="exceeds"):
        asyncio.run(scenario())


def test_tls_over_a_unix_socket_pins_the_servers_certificate(tmp_path):
    """`ferry+tls+unix://` (a sandbox on a Ray node: its agent carries the bytes): TLS end to
    end over the socket, the certificate pinned; a wrong or missing pin is refused."""
    from ferry._protocol import FrameSocket, open_stream, parse_address
    from ferry.server.tls import tls_files

    tls = tls_files(tmp_path / "home", "10.0.0.5")
    path = str(tmp_path / "control.sock")
    url = f"ferry+tls+unix://{path}"
    assert parse_address(url).tls and str(parse_address(url)) == url

    async def main() -> None:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.readexactly(5))
            await writer.drain()
            writer.close()

        server = await asyncio.start_unix_server(echo, path=path, ssl=tls.server_context())
        reader, writer = await open_stream(url, fingerprint=tls.fingerprint)
        writer.write(b"hello")
        assert await reader.readexactly(5) == b"hello"
        writer.close()
        sock = await asyncio.to_thread(FrameSocket.connect, url, fingerprint=tls.fingerprint)
        sock.send_raw(b"frame")
        assert await asyncio.to_thread(sock._sock.recv, 5) == b"frame"
        with pytest.raises(ConnectionError, match="fingerprint"):
            await open_stream(url, fingerprint="00" * 32)
        with pytest.raises(InvalidError, match="needs the server certificate's fingerprint pinned"):
            await open_stream(url)
        server.close()

    asyncio.run(main())
