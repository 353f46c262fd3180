"""TLS for a server reachable from other machines.

A server bound to a non-loopback address serves TLS, on its control-plane port and its web
gateway alike. It presents the operator's certificate (`FERRY_TLS_CERT` / `FERRY_TLS_KEY`)
or one it generates once under `$FERRY_HOME/tls/` (an ECDSA P-256 key, mode 0600, and a
self-signed certificate valid for ten years). Clients pin the generated certificate's SHA-256
fingerprint, which `ferry credential create` prints with the credential; a CA-signed
certificate is verified as usual instead.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from .. import _config
from .._protocol import cert_fingerprint, is_loopback
from ..exception import InvalidError


@dataclass(frozen=True)
class TLSFiles:
    """The certificate and key a server presents, and the certificate's fingerprint."""

    cert: Path
    key: Path
    fingerprint: str
    generated: bool

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.cert), str(self.key))
        return context


def wants_tls(host: str) -> bool:
    """Whether a server bound to `host` serves TLS (FERRY_TLS); refuses clear text on a
    non-loopback address."""
    mode = _config.get("tls").strip().lower()
    if mode not in ("auto", "on", "off"):
        raise InvalidError(f"FERRY_TLS={mode!r} is invalid: use auto, on or off.")
    if mode == "off" and not is_loopback(host):
        raise InvalidError(
            f"Refusing to serve {host} without TLS: traffic between machines is never sent in "
            "clear text. Unset FERRY_TLS (or set it to auto) to serve TLS with a generated "
            "certificate, or give your own with FERRY_TLS_CERT and FERRY_TLS_KEY.")
    return mode == "on" or (mode == "auto" and not is_loopback(host))


def tls_files(home: Path, host: str) -> TLSFiles:
    """The operator's certificate, or the one generated under FERRY_HOME (made on first use)."""
    cert, key = _config.get("tls_cert"), _config.get("tls_key")
    if cert or key:
        if not (cert and key):
            raise InvalidError("Set both FERRY_TLS_CERT and FERRY_TLS_KEY, or neither.")
        files = TLSFiles(Path(cert), Path(key), _fingerprint_of(Path(cert)), generated=False)
    else:
        directory = home / "tls"
        files = TLSFiles(directory / "server.crt", directory / "server.key", "", generated=True)
        if not (files.cert.exists() and files.key.exists()):
            _generate(directory, host)
        files = TLSFiles(files.cert, files.key, _fingerprint_of(files.cert), generated=True)
    try:
        files.server_context()
    except (OSError, ssl.SSLError) as exc:
        raise InvalidError(f"Cannot use the TLS certificate {files.cert} with key {files.key}: {exc}") from None
    return files


def _fingerprint_of(cert: Path) -> str:
    try:
        pem = cert.read_text()
    except OSError as exc:
        raise InvalidError(f"Cannot read the TLS certificate {cert}: {exc}") from None
    return cert_fingerprint(ssl.PEM_cert_to_DER_cert(pem))


def _generate(directory: Path, host: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.DNSName(socket.gethostname())]
    for address in {host, "127.0.0.1"}:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            if address:
                names.append(x509.DNSName(address))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Ferry server on {socket.gethostname()}")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path = directory / "server.key"
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    (directory / "server.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
