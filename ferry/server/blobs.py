"""Content-addressed blob store: every blob is stored once, under its SHA-256."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from ..exception import InvalidError, NotFoundError


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    """Blobs as files `<root>/<first two hex digits>/<hash>`, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise InvalidError(f"{digest!r} is not a SHA-256 hex digest.")
        return self.root / digest[:2] / digest

    def has(self, digest: str) -> bool:
        return self._path(digest).exists()

    def missing(self, digests: list[str]) -> list[str]:
        return [d for d in digests if not self.has(d)]

    def size(self, digest: str) -> int | None:
        """The blob's size in bytes, or None if the store lacks it."""
        try:
            return self._path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def put(self, data: bytes, digest: str | None = None, *, durable: bool = False) -> str:
        """Store `data`; with `durable`, it is on disk (fsync) before this returns, so a
        record written afterwards never points at a blob a power loss could lose."""
        actual = sha256(data)
        if digest is not None and digest != actual:
            raise InvalidError(f"Blob content does not match its declared hash {digest}.")
        path = self._path(actual)
        if path.exists():
            return actual
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
        if durable:
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        return actual

    def sync(self) -> None:
        """Flush every blob written so far to disk (syncfs on the store's filesystem), so that
        a record written afterwards never points at data a power loss could lose."""
        fd = os.open(self.root, os.O_RDONLY)
        try:
            if _libc_syncfs(fd) != 0:
                os.sync()
        finally:
            os.close(fd)

    def get(self, digest: str) -> bytes:
        try:
            return self._path(digest).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"Blob {digest} is not in the store.") from None


def _libc_syncfs(fd: int) -> int:
    """syncfs(2) where the C library has it (Linux), else -1."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).syncfs(fd)
    except (OSError, AttributeError):
        return -1
