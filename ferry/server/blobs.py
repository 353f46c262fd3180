"""Content-addressed blob store: every blob is stored once, under its SHA-256.

A blob's modification time is when it was last written, uploaded again (`put` of a blob the
store has) or reported present to an uploader (`missing`): the garbage collector
(server/blob_gc.py) deletes an unreferenced blob only once that time is older than its grace
period, and checks it again under the store's lock just before deleting, so a blob an upload
was told it need not send is never deleted under it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Iterator

from ..exception import InvalidError, NotFoundError


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    """Blobs as files `<root>/<first two hex digits>/<hash>`, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # a freshness mark (touch) and a collection never interleave

    def _path(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise InvalidError(f"{digest!r} is not a SHA-256 hex digest.")
        return self.root / digest[:2] / digest

    def has(self, digest: str) -> bool:
        return self._path(digest).exists()

    def missing(self, digests: list[str]) -> list[str]:
        """The digests the store lacks; those it has are marked fresh (an uploader will refer
        to them without sending them)."""
        with self._lock:
            return [d for d in digests if not self._touch(self._path(d))]

    @staticmethod
    def _touch(path: Path) -> bool:
        """Mark the blob at `path` fresh; False if there is none."""
        try:
            os.utime(path)
            return True
        except FileNotFoundError:
            return False
        except OSError:  # (a read-only store: nothing is collected from it either)
            return path.exists()

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
        with self._lock:
            if self._touch(path):
                return actual
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as exc:  # (a full disk: nothing half written stays behind)
            os.unlink(tmp)
            raise OSError(exc.errno, exc.strerror, str(self.root)) from exc
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

    def files(self) -> Iterator[tuple[str, str, os.stat_result]]:
        """(directory, name, stat) of every file in the store: blobs, and `.tmp-*` files of writes in
        progress (or left by a crash)."""
        for directory in self.root.iterdir():
            if not directory.is_dir():
                continue
            for entry in os.scandir(directory):
                try:
                    yield directory.name, entry.name, entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue

    def remove_if_stale(self, name: str, prefix: str, cutoff: float) -> int | None:
        """Delete file `name` of directory `prefix` if it was last marked before `cutoff`
        (checked under the lock); returns its size if deleted."""
        path = self.root / prefix / name
        with self._lock:
            try:
                st = path.stat()
                if st.st_mtime >= cutoff:
                    return None
                path.unlink()
            except FileNotFoundError:
                return None
        return st.st_size

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
