"""Ferry's wire protocol (version 1): length-prefixed msgpack frames over TCP.

Every frame is a 4-byte big-endian length followed by a msgpack map. The first frame on a
connection is the peer's `hello`; the server answers `welcome` or `refused`. After that:

- requests  `{"t": "req", "id": int, "m": method, "a": {args}}`
- responses `{"t": "res", "id": int, "ok": true, "r": result}` or
            `{"t": "res", "id": int, "ok": false, "e": {"type": name, "msg": text}}`
- pushes    `{"t": "push", "k": kind, ...}` sent by either side without a reply.

Method and push names are listed in docs/architecture.md. Function arguments and results travel
as opaque cloudpickle bytes inside these maps; msgpack keeps the envelope language neutral.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any
from urllib.parse import urlparse

import msgpack

from .exception import ConnectionError, InvalidError

PROTOCOL_VERSION = 1
MAX_FRAME = 256 * 1024 * 1024
_HEADER = struct.Struct(">I")


def encode(message: dict[str, Any]) -> bytes:
    body = msgpack.packb(message, use_bin_type=True)
    return _HEADER.pack(len(body)) + body


def decode(body: bytes) -> dict[str, Any]:
    return msgpack.unpackb(body, raw=False, strict_map_key=False)


def parse_url(url: str) -> tuple[str, int]:
    """Split `ferry://HOST:PORT` (or `HOST:PORT`) into host and port."""
    parsed = urlparse(url if "://" in url else f"ferry://{url}")
    try:
        port = parsed.port
    except ValueError:
        port = None
    if parsed.scheme != "ferry" or not parsed.hostname or not port:
        raise InvalidError(f"Invalid server address {url!r}: expected ferry://HOST:PORT.")
    return parsed.hostname, port


def make_url(host: str, port: int) -> str:
    return f"ferry://{host}:{port}"


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    header = await reader.readexactly(4)
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ConnectionError(f"Frame of {length} bytes exceeds the {MAX_FRAME}-byte limit.")
    return decode(await reader.readexactly(length))


class FrameSocket:
    """A blocking socket speaking frames; used by container processes."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()

    @classmethod
    def connect(cls, url: str, timeout: float = 10.0) -> "FrameSocket":
        host, port = parse_url(url)
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise ConnectionError(f"Cannot reach the Ferry server at {url}: {exc}") from None
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock)

    def send(self, message: dict[str, Any]) -> None:
        self._sock.sendall(encode(message))

    def send_raw(self, data: bytes) -> None:
        self._sock.sendall(data)

    def recv(self) -> dict[str, Any]:
        while True:
            if len(self._buffer) >= 4:
                (length,) = _HEADER.unpack_from(self._buffer)
                if len(self._buffer) >= 4 + length:
                    body = bytes(self._buffer[4 : 4 + length])
                    del self._buffer[: 4 + length]
                    return decode(body)
            chunk = self._sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("The Ferry server closed the connection.")
            self._buffer += chunk

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass


def error_payload(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "msg": str(exc)}


def hello(role: str, **fields: Any) -> dict[str, Any]:
    return {"t": "hello", "v": PROTOCOL_VERSION, "role": role, **fields}
