"""Ferry's wire protocol (version 1): length-prefixed msgpack frames over a stream socket.

Addresses: `ferry://HOST:PORT` (TCP, loopback only), `ferry+tls://HOST:PORT` (TCP with TLS;
the client pins the server certificate's SHA-256 fingerprint or verifies it against CAs) and
`ferry+unix:///PATH` (a Unix socket: what sandbox containers use) and `ferry+tls+unix:///PATH`
(TLS over a Unix socket, the certificate pinned: a sandbox on a Ray node, whose agent carries
the bytes to a TLS control plane).

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
import hashlib
import hmac
import socket
import ssl
import struct
from dataclasses import dataclass
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


TCP, TLS, UNIX, TLS_UNIX = "ferry", "ferry+tls", "ferry+unix", "ferry+tls+unix"


@dataclass(frozen=True)
class Address:
    """Where a server listens: a TCP host and port (with TLS or not) or a Unix socket path."""

    scheme: str
    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def tls(self) -> bool:
        return self.scheme in (TLS, TLS_UNIX)

    @property
    def unix(self) -> bool:
        return self.scheme in (UNIX, TLS_UNIX)

    def __str__(self) -> str:
        if self.unix:
            return f"{self.scheme}://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_address(url: str) -> Address:
    """Read `ferry://HOST:PORT`, `ferry+tls://HOST:PORT`, `ferry+unix:///PATH`,
    `ferry+tls+unix:///PATH` (or `HOST:PORT`)."""
    parsed = urlparse(url if "://" in url else f"ferry://{url}")
    if parsed.scheme in (UNIX, TLS_UNIX):
        if not parsed.path.startswith("/") or parsed.netloc:
            raise InvalidError(f"Invalid server address {url!r}: expected {parsed.scheme}:///ABSOLUTE/PATH.")
        return Address(parsed.scheme, path=parsed.path)
    try:
        port = parsed.port
    except ValueError:
        port = None
    if parsed.scheme not in (TCP, TLS) or not parsed.hostname or not port:
        raise InvalidError(f"Invalid server address {url!r}: expected ferry://HOST:PORT, "
                           "ferry+tls://HOST:PORT or ferry+unix:///PATH.")
    return Address(parsed.scheme, host=parsed.hostname, port=port)


def parse_url(url: str) -> tuple[str, int]:
    """Host and port of a TCP address (`ferry://` or `ferry+tls://`)."""
    address = parse_address(url)
    if address.unix:
        raise InvalidError(f"{url!r} is a Unix socket address, not a TCP one.")
    return address.host, address.port


def make_url(host: str, port: int, *, tls: bool = False) -> str:
    return str(Address(TLS if tls else TCP, host=host, port=port))


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine's loopback interface (where TLS is not needed)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cert_fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint of a DER certificate, as hex (what client credentials pin)."""
    return hashlib.sha256(der).hexdigest()


def client_tls_context(fingerprint: str | None, ca_file: str | None = None) -> ssl.SSLContext:
    """A TLS context for connecting to a server. With a pinned `fingerprint`, the certificate
    is checked against it after the handshake (see `check_pinned`); otherwise it must verify
    against `ca_file` or the system's CAs, host name included."""
    if fingerprint:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # trust comes from the pin, checked right after
    else:
        context = ssl.create_default_context(cafile=ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def check_pinned(ssl_object: ssl.SSLObject | ssl.SSLSocket | None, fingerprint: str | None, url: str) -> None:
    """Raise unless the peer certificate of a TLS connection matches the pinned fingerprint."""
    if not fingerprint:
        return
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    actual = cert_fingerprint(der) if der else ""
    if not hmac.compare_digest(actual, fingerprint.lower().replace(":", "")):
        raise ConnectionError(
            f"The server at {url} presented a TLS certificate whose fingerprint ({actual[:16]}...) "
            "is not the one your credential pins. If the server's certificate was replaced on "
            "purpose, set the new fingerprint in your profile (`ferry profile set`); otherwise "
            "something is intercepting the connection.")


async def open_stream(url: str, *, fingerprint: str | None = None, ca_file: str | None = None,
                      limit: int = 1 << 26) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a stream to the server at `url` (TCP, TLS or Unix socket)."""
    address = parse_address(url)
    if address.unix:
        context = _unix_tls_context(address, fingerprint, url)
        reader, writer = await asyncio.open_unix_connection(
            address.path, limit=limit, ssl=context, server_hostname=UNIX_TLS_NAME if context else None)
        if context is not None:
            _checked(writer, fingerprint, url)
        return reader, writer
    context = client_tls_context(fingerprint, ca_file) if address.tls else None
    reader, writer = await asyncio.open_connection(
        address.host, address.port, limit=limit, ssl=context,
        server_hostname=address.host if context is not None else None)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if address.tls:
        _checked(writer, fingerprint, url)
    return reader, writer


UNIX_TLS_NAME = "ferry-control-plane"
"""The server name a client gives for TLS over a Unix socket (the certificate is pinned, so the
name is not checked)."""


def _unix_tls_context(address: Address, fingerprint: str | None, url: str) -> ssl.SSLContext | None:
    if not address.tls:
        return None
    if not fingerprint:
        raise InvalidError(f"{url} is TLS over a Unix socket, which needs the server certificate's fingerprint "
                           "pinned (FERRY_TLS_FINGERPRINT).")
    return client_tls_context(fingerprint)


def _checked(writer: asyncio.StreamWriter, fingerprint: str | None, url: str) -> None:
    try:
        check_pinned(writer.get_extra_info("ssl_object"), fingerprint, url)
    except ConnectionError:
        writer.close()
        raise


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
    def connect(cls, url: str, timeout: float = 10.0, *, fingerprint: str | None = None,
                ca_file: str | None = None) -> "FrameSocket":
        address = parse_address(url)
        try:
            if address.unix:
                context = _unix_tls_context(address, fingerprint, url)
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                sock.connect(address.path)
                if context is not None:
                    sock = context.wrap_socket(sock, server_hostname=UNIX_TLS_NAME)
                    check_pinned(sock, fingerprint, url)
            else:
                sock = socket.create_connection((address.host, address.port), timeout=timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if address.tls:
                    context = client_tls_context(fingerprint, ca_file)
                    sock = context.wrap_socket(sock, server_hostname=address.host)
                    check_pinned(sock, fingerprint, url)
        except (OSError, ssl.SSLError) as exc:
            raise ConnectionError(f"Cannot reach the Ferry server at {url}: {exc}") from None
        sock.settimeout(None)
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
