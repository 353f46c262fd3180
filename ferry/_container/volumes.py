"""Volumes inside a container: each mounted volume is a local view, a plain directory.

The runtime binds an empty directory at the mount path (read-only for `read_only()` mounts)
and tells the container, in FERRY_VOLUME_MOUNTS, where it can write the same directory (its
"stage") and where the host's chunk cache is (FERRY_VOLUME_CACHE). Then, over the container's
own connection (no filesystem is shared with the server):

    start     fetch the head manifest, fetch the chunks the host cache lacks, write the files
              (files under 1 MiB are fetched straight into the view, without the cache)
    commit    scan the view, hash what changed since the last sync (size, mtime, ctime and
              inode tell), upload the chunks the server lacks, send the change set: the server
              applies it to the volume's current head (other writers' changes are kept)
    reload    refuse if files in the view are open; commit; bring the view to the new head
    clean exit (drain)   commit every writable view

Cached chunks are checked against their digest before use, so a damaged (or tampered) cache
entry is fetched again rather than copied into a view.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

from .. import _config
from .._volume_files import (
    CHUNK_SIZE, DIR, FILE, LINK, Entry, Manifest, check_file_size, file_chunks,
    manifest_from_wire, read_chunk,
)
from .._volume_transfer import Chunk, fetch_chunks, upload_chunks
from ..exception import InvalidError, NotFoundError

Request = Callable[..., Any]
DIRECT_BELOW = 1024 * 1024  # smaller files skip the host cache
_views: list["View"] = []
_installed = False


class View:
    """One volume mounted in this container."""

    def __init__(self, spec: dict[str, Any], request: Request, cache: Path) -> None:
        self.path: str = spec["path"]
        self.stage = Path(spec["stage"])
        self.volume_id: str = spec["id"]
        self.name: str = spec["name"]
        self.read_only = bool(spec.get("read_only"))
        self.request = request
        self.cache = cache
        self.version = 1
        self.base: Manifest = {}                 # what the view held at its last sync
        self.stats: dict[str, tuple] = {}        # file -> its stat signature at that sync
        self._fetched = 0                        # chunks added to the host cache since the last trim
        self.lock = threading.Lock()

    # -- head -----------------------------------------------------------------------------
    def _head(self) -> Manifest:
        entries: list[Any] = []
        try:
            page = self.request("volume.manifest", id=self.volume_id)
        except NotFoundError:
            raise NotFoundError(f"Volume {self.name!r} (mounted at {self.path}) was deleted. Apps refer to the "
                                "volume they were deployed with: create it again, then run or deploy the app "
                                "again.") from None
        self.version = page["version"]
        digest = page["hash"]
        while True:
            entries.extend(page["entries"])
            if page["next"] is None:
                return manifest_from_wire(entries)
            page = self.request("volume.manifest", id=self.volume_id, hash=digest, offset=page["next"])

    def materialise(self) -> None:
        with self.lock:
            self._sync_to(self._head())
        self._trim_cache()

    # -- writing the view -----------------------------------------------------------------
    def _sync_to(self, target: Manifest) -> None:
        """Bring the directory from `self.base` (what it holds) to `target`."""
        current = self.base
        for path in sorted(current, key=lambda p: p.count("/"), reverse=True):  # deepest first
            wanted = target.get(path)
            if wanted is None or wanted.kind != current[path].kind:
                self._remove(path)
        for path in sorted(p for p, e in target.items() if e.kind == DIR):
            full = self.stage / path
            full.mkdir(exist_ok=True)
            os.chmod(full, target[path].mode or 0o755)
        files = [p for p, e in target.items() if e.kind == FILE and current.get(p) != e]
        large = [p for p in files if target[p].size >= DIRECT_BELOW]
        self._fill_cache(target, large)
        with ThreadPoolExecutor(8, thread_name_prefix="ferry-volume-write") as pool:
            for _ in pool.map(lambda p: self._write_file(p, target[p]), large):
                pass
            self._write_small(target, [p for p in files if target[p].size < DIRECT_BELOW], pool)
        for path, entry in target.items():
            if entry.kind == LINK and current.get(path) != entry:
                full = self.stage / path
                if full.is_symlink() or full.exists():
                    full.unlink()
                os.symlink(entry.data, full)
        self.base = dict(target)

    def _remove(self, path: str) -> None:
        full = self.stage / path
        self.stats.pop(path, None)
        try:
            if full.is_dir() and not full.is_symlink():
                import shutil

                shutil.rmtree(full)
            else:
                full.unlink()
        except FileNotFoundError:
            pass

    def _cached(self, digest: str) -> Path:
        return self.cache / digest[:2] / digest

    def _fill_cache(self, target: Manifest, files: list[str]) -> None:
        """Fetch the chunks of `files` that the host's cache lacks."""
        wanted: dict[str, int] = {}
        for path in files:
            entry = target[path]
            for index, digest in enumerate(entry.data):
                if digest not in wanted and not self._cached(digest).exists():
                    wanted[digest] = min(CHUNK_SIZE, entry.size - index * CHUNK_SIZE)
        for digest, data in fetch_chunks(self.request, list(wanted.items())):
            self._store(digest, data)
        self._fetched += len(wanted)

    def _store(self, digest: str, data: bytes) -> None:
        target = self._cached(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)

    def _chunk(self, digest: str) -> bytes:
        try:
            data = self._cached(digest).read_bytes()
            if hashlib.sha256(data).hexdigest() == digest:
                os.utime(self._cached(digest))  # recently used: trimmed last
                return data
        except FileNotFoundError:
            pass
        data = self.request("volume.get_chunks", hashes=[digest])[0]
        self._store(digest, data)
        return data

    def _trim_cache(self) -> None:
        """Keep the host cache under FERRY_VOLUME_CACHE_SIZE (least recently used go first);
        only after this view fetched chunks, since that is when it grows."""
        limit = int(_config.get("volume_cache_size"))
        if not self._fetched or limit <= 0:
            return
        self._fetched = 0
        found = []
        for directory in self.cache.iterdir() if self.cache.is_dir() else []:
            for entry in os.scandir(directory):
                try:
                    info = entry.stat()
                except FileNotFoundError:
                    continue
                found.append((info.st_mtime, info.st_size, entry.path))
        total = sum(size for _, size, _ in found)
        for _, size, path in sorted(found):
            if total <= limit * 0.8:
                break
            try:
                os.unlink(path)  # a container reading it now fetches it again (see _chunk)
            except FileNotFoundError:
                pass
            total -= size

    def _write_small(self, target: Manifest, paths: list[str], pool: ThreadPoolExecutor) -> None:
        """Files under DIRECT_BELOW (one chunk at most): fetched in batches straight into the
        view, since creating a cache entry would cost as much as fetching them again."""
        by_digest: dict[str, list[str]] = {}
        pending = []
        for path in paths:
            entry = target[path]
            if entry.data:
                by_digest.setdefault(entry.data[0], []).append(path)
            else:
                pending.append(pool.submit(self._write_file, path, entry, b""))
        wanted = [(digest, target[users[0]].size) for digest, users in by_digest.items()]
        for digest, data in fetch_chunks(self.request, wanted):
            pending += [pool.submit(self._write_file, path, target[path], data) for path in by_digest[digest]]
            if len(pending) >= 1024:
                for future in pending:
                    future.result()
                pending = []
        for future in pending:
            future.result()

    def _write_file(self, path: str, entry: Entry, data: bytes | None = None) -> None:
        full = self.stage / path
        fd, tmp = tempfile.mkstemp(dir=full.parent, prefix=".ferry-")
        with os.fdopen(fd, "wb") as handle:
            if data is not None:
                handle.write(data)
            for digest in entry.data if data is None else ():
                handle.write(self._chunk(digest))
        os.chmod(tmp, entry.mode)
        os.utime(tmp, (entry.mtime, entry.mtime))
        if full.is_dir() and not full.is_symlink():
            self._remove(path)
        os.replace(tmp, full)
        self.stats[path] = _signature(os.lstat(full))

    # -- committing -----------------------------------------------------------------------
    def scan(self) -> tuple[Manifest, list[str]]:
        """What the view holds now, and which files of it were hashed (changed)."""
        current: Manifest = {}
        hashed: list[str] = []
        for directory, dirnames, filenames in os.walk(self.stage):
            relative = os.path.relpath(directory, self.stage)
            prefix = "" if relative == "." else relative + "/"
            for name in [*dirnames, *filenames]:
                path = prefix + name
                info = os.lstat(os.path.join(directory, name))
                known = self.base.get(path)
                if stat.S_ISLNK(info.st_mode):
                    target = os.readlink(os.path.join(directory, name))
                    current[path] = known if known is not None and known.kind == LINK and known.data == target \
                        else Entry(LINK, 0, 0o777, info.st_mtime, target)
                elif stat.S_ISDIR(info.st_mode):
                    mode = stat.S_IMODE(info.st_mode)
                    current[path] = known if known is not None and known.kind == DIR and known.mode == mode \
                        else Entry(DIR, 0, mode, info.st_mtime, None)
                elif stat.S_ISREG(info.st_mode):
                    if known is not None and known.kind == FILE and self.stats.get(path) == _signature(info):
                        current[path] = known
                        continue
                    digests, size = file_chunks(os.path.join(directory, name))
                    current[path] = Entry(FILE, size, stat.S_IMODE(info.st_mode), info.st_mtime, tuple(digests))
                    self.stats[path] = _signature(info)
                    hashed.append(path)
                else:
                    print(f"ferry: volume {self.name!r}: skipping {self.path}/{path}, which is neither a file, "
                          "a directory nor a symbolic link", file=sys.stderr)
            dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(directory, d))]
        return current, hashed

    def commit(self) -> dict[str, Any] | None:
        """Send what changed since the last sync; None when nothing did."""
        if self.read_only:
            raise InvalidError(f"Volume {self.name!r} is mounted read-only at {self.path}; it cannot be committed. "
                               "Mount it without read_only() to write to it.")
        with self.lock:
            current, _ = self.scan()
            puts = {p: e for p, e in current.items() if self.base.get(p) != e}
            deletes = [p for p in self.base if p not in current]
            if not puts and not deletes:
                return None
            chunks = []
            for path, entry in puts.items():
                if entry.kind != FILE:
                    continue
                check_file_size(self.version, path, entry.size, self.name)
                full = self.stage / path
                for index, digest in enumerate(entry.data):
                    chunks.append(Chunk(digest, min(CHUNK_SIZE, entry.size - index * CHUNK_SIZE),
                                        lambda f=full, i=index: read_chunk(f, i)))
            upload_chunks(self.request, chunks)
            result = self.request("volume.commit", id=self.volume_id, puts=[e.wire(p) for p, e in puts.items()],
                                  deletes=deletes)
            self.base = current
            for path in deletes:
                self.stats.pop(path, None)
            return result

    def reload(self) -> None:
        with self.lock:
            busy = self.open_files()
            if busy:
                shown = ", ".join(busy[:5]) + (f" and {len(busy) - 5} more" if len(busy) > 5 else "")
                raise InvalidError(f"Cannot reload volume {self.name!r}: files in it are open ({shown}). Close them "
                                   "(leave their `with` blocks) before calling reload().")
        if not self.read_only:
            self.commit()  # the guide's rule: uncommitted changes are committed by a reload
        with self.lock:
            self._sync_to(self._head())
        self._trim_cache()

    def open_files(self) -> list[str]:
        """Paths in this view that this process has open (from /proc/self/fd)."""
        prefixes = (self.path.rstrip("/") + "/", str(self.stage) + "/")
        found = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith(prefixes) or target in (self.path, str(self.stage)):
                found.append(target)
        return sorted(set(found))


def _signature(info: os.stat_result) -> tuple:
    return (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)


# -- this container's views ---------------------------------------------------------------
def install(request: Request) -> None:
    """Mount (materialise) every volume the runtime prepared for this container."""
    global _installed
    _installed = True
    specs = json.loads(os.environ.get("FERRY_VOLUME_MOUNTS") or "[]")
    cache = Path(os.environ.get("FERRY_VOLUME_CACHE") or "/var/lib/ferry/volumes/cache")
    for spec in specs:
        view = View(spec, request, cache)
        view.materialise()
        _views.append(view)


def _views_of(volume: Any, action: str) -> list[View]:
    if not _installed:
        raise InvalidError(f"Volume.{action}() works inside a container that mounts the volume "
                           "(a function with volumes={path: volume}). From here, use batch_upload(), "
                           "read_file() or listdir() instead.")
    found = [v for v in _views if v.volume_id == getattr(volume, "_volume_id", None) or v.name == volume.name]
    if not found:
        raise InvalidError(f"Volume {volume.name!r} is not mounted in this container; add "
                           f"volumes={{'/path': volume}} to the function to use {action}().")
    return found


def commit(volume: Any) -> None:
    for view in _views_of(volume, "commit"):
        view.commit()


def reload(volume: Any) -> None:
    for view in _views_of(volume, "reload"):
        view.reload()


def commit_all(*, raise_errors: bool = False) -> None:
    """On a clean exit: commit every writable view; failures are reported (or raised)."""
    for view in _views:
        if view.read_only:
            continue
        try:
            view.commit()
        except Exception as error:  # noqa: BLE001 - the container is ending; say why in its logs
            if raise_errors:
                raise
            print(f"ferry: committing volume {view.name!r} at exit failed: {type(error).__name__}: {error}",
                  file=sys.stderr)


@contextlib.contextmanager
def mounted_for_build() -> Iterator[None]:
    """Around an `Image.run_function` step: its volumes (prepared by the builder) are filled
    over a client connection before the function runs and committed when it returns."""
    if not os.environ.get("FERRY_VOLUME_MOUNTS"):
        yield
        return
    from .._client import Client

    install(Client.from_env_sync().request_sync)
    yield
    commit_all(raise_errors=True)  # a failed commit fails the build step
