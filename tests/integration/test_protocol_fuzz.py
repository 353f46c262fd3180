"""Property-based fuzzing of the wire protocol against a real server: random bytes, random
frames, random methods with random arguments, truncated and oversized frames, from
unauthenticated and authenticated peers. The server never crashes, never answers with a
ServerError, and keeps serving a well-behaved client throughout."""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferry._protocol import MAX_FRAME, FrameSocket, encode, hello
from ferry.exception import ConnectionError as FerryConnectionError
from ferry.server.api import _SHAPES
from ferry.server.dicts import DictService
from ferry.server.queues import QueueService
from ferry.server.sandboxes import SandboxService
from ferry.server.volume_rpc import VolumeService

from ..conftest import ServerProcess

# every method the server answers, except the one that stops it (tested on its own elsewhere)
METHODS = sorted((set(_SHAPES) | set(VolumeService.shapes()) | set(DictService.shapes())
                  | set(QueueService.shapes()) | set(SandboxService.shapes())) - {"server.shutdown"})
ARGUMENT_NAMES = sorted({name for shapes in (_SHAPES, VolumeService.shapes(), DictService.shapes(),
                                              QueueService.shapes(), SandboxService.shapes())
                         for shape in shapes.values() for name in shape})
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(allow_nan=False),
                    st.text(max_size=40), st.binary(max_size=64))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=5)), max_leaves=20)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory):
    own = ServerProcess.start(tmp_path_factory.mktemp("fuzz"))
    yield own
    own.stop()


def _credential(home: Path) -> dict:
    return json.loads((home / "admin-credential.json").read_text())


def _admin(server: ServerProcess) -> FrameSocket:
    sock = FrameSocket.connect(server.url)
    sock.send(hello("client", **_credential(server.home)))
    assert sock.recv()["t"] == "welcome"
    return sock


def _still_serving(server: ServerProcess) -> None:
    assert server.process.poll() is None, "the server died"
    sock = _admin(server)
    try:
        sock.send({"t": "req", "id": 1, "m": "server.status", "a": {}})
        assert sock.recv()["ok"] is True
    finally:
        sock.close()


def _raw(server: ServerProcess) -> socket.socket:
    host, port = server.url.removeprefix("ferry://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def _drain(sock: socket.socket) -> None:
    """Read whatever the server answers until it closes or goes quiet."""
    sock.settimeout(0.5)
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass


@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes_before_the_hello(fuzzed: ServerProcess, data: bytes) -> None:
    sock = _raw(fuzzed)
    try:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        _drain(sock)
    finally:
        sock.close()
    assert fuzzed.process.poll() is None


@FUZZ
@given(frame=values)
def test_random_hello_frames_are_refused(fuzzed: ServerProcess, frame) -> None:
    sock = _raw(fuzzed)
    try:
        sock.sendall(encode(frame) if isinstance(frame, dict) else struct.pack(">I", 3) + b"\x93\x01\x02")
        sock.settimeout(10)
        header = sock.recv(4)
        if header:  # refused with a reason (or closed without an answer)
            body = b""
            (length,) = struct.unpack(">I", header)
            while len(body) < length:
                body += sock.recv(length - len(body))
            assert msgpack.unpackb(body, raw=False)["t"] == "refused"
    finally:
        sock.close()


@FUZZ
@given(method=st.one_of(st.sampled_from(METHODS), st.text(max_size=20).filter(lambda m: m != "server.shutdown"),
                        values),
       args=st.one_of(values, st.dictionaries(st.sampled_from(ARGUMENT_NAMES), values, max_size=5)))
def test_random_requests_from_an_administrator_never_get_a_server_error(fuzzed: ServerProcess, method, args) -> None:
    sock = _admin(fuzzed)
    try:
        sock.send({"t": "req", "id": 7, "m": method, "a": args})
        try:
            answer = sock.recv()
        except FerryConnectionError:
            answer = None  # (a request that waits, e.g. a blocking queue get, is cut by the close)
        if answer is not None and not answer.get("ok"):
            assert answer["e"]["type"] != "ServerError", (method, args, answer)
    finally:
        sock.close()


@FUZZ
@given(frame=values)
def test_random_frames_after_the_hello(fuzzed: ServerProcess, frame) -> None:
    sock = _admin(fuzzed)
    try:
        sock.send_raw(encode(frame) if isinstance(frame, dict) else encode({"t": "push", "k": frame}))
        sock.send({"t": "req", "id": 9, "m": "blob.missing", "a": {"hashes": []}})
        try:
            answer = sock.recv()
            while answer.get("id") != 9:  # (an answer to a fuzzed request comes first)
                if answer.get("t") == "res" and not answer.get("ok"):
                    assert answer["e"]["type"] != "ServerError", (frame, answer)
                answer = sock.recv()
            assert answer["ok"] is True
        except FerryConnectionError:
            pass  # a frame that is not a request, response or push closes the connection
    finally:
        sock.close()


@pytest.mark.parametrize("authenticated", [False, True])
def test_truncated_and_oversized_frames_close_only_their_connection(fuzzed: ServerProcess, authenticated) -> None:
    for payload in (struct.pack(">I", 100) + b"\x81",               # truncated, then closed
                    struct.pack(">I", MAX_FRAME + 1) + b"\x00" * 16,  # longer than any frame may be
                    struct.pack(">I", 4) + b"\xc1\xc1\xc1\xc1"):      # not msgpack at all
        sock = _raw(fuzzed)
        try:
            if authenticated:
                sock.sendall(encode(hello("client", **_credential(fuzzed.home))))
                sock.settimeout(10)
                sock.recv(4096)  # the welcome
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            _drain(sock)
        finally:
            sock.close()
        _still_serving(fuzzed)


def test_the_server_survived_the_fuzzing(fuzzed: ServerProcess) -> None:
    _still_serving(fuzzed)
    log = fuzzed.log.read_text()
    for sign_of_a_bug in ("Task exception was never retrieved", "Unhandled exception", "failed\nTraceback"):
        assert sign_of_a_bug not in log, log[-3000:]
