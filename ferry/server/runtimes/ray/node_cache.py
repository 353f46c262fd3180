"""The bound on a node's cache (the ray runtime, on the node): when `$FERRY_NODE_CACHE` holds
more than FERRY_NODE_CACHE_MAX_GB, its least recently used entries go, never one in use.

    entry            its files (under $FERRY_NODE_CACHE)               last used
    venv <key>       images/venvs/<key>/ and <key>.logs/               mtime of the venv directory
    layer <sha256>   layers/<sha256>/   (an image layer of sandbox      mtime of the directory
                     nodes, node_layers.py)
    blob <sha256>    blobs/<sha256>                                   mtime of the file
    mount <digest>   mounts/<digest>/   (add_local_* files)            mtime of the directory
    code <digest>    home/mounts/<digest>/   (a function's source)     mtime of the directory
    chunk <sha256>   home/volumes/cache/<xx>/<sha256>  (committed volume chunks, which are
                     also kept under FERRY_VOLUME_CACHE_SIZE by the containers that read them)

Never evicted: `home/volumes/views/` (the volumes of running containers, with what they have
not committed yet), `sandboxes/` (the writable layers of running sandbox containers; those of
containers whose agent is gone are removed by each eviction), `images/ferry-package`, and the
small `<key>.lock`, `<key>.builds`, `<sha256>.fetches` and `.size` files (a venv's build lock,
build and fetch journals, measured sizes).

In use: a process that uses entries pins them (`Pin`): it holds `pins/<pid>.<n>` (one file per
pin: a node agent's process holds one per container), naming them, with an exclusive flock
for as long as it uses them (a container's agent: until its container has ended; a node build:
until the build ended; a node agent's zygote: its venv, while it lives), and touches them
(their last use) when it pins and when it lets go. The evictor skips every entry a held pin
names, and a venv whose `<key>.lock` someone holds (it is being checked or built). A pin is
written, and an eviction runs, under `.evict.lock` (shared / exclusive), so an entry is either
pinned before an eviction looks, or found missing afterwards and sent or built again. A pin file nobody holds (its process died)
is removed by the next eviction.

When: `evict` runs when a container starts (after its process started) and when it ends, on
the node, in its agent's process; no daemon. Past the bound it takes entries out, oldest use
first, until the cache is at most `TARGET` of the bound, and logs each one (the `ferry.node`
logger, in the Ray worker's log, and one line per entry in `$FERRY_NODE_CACHE/evictions.log`).
An entry is taken out by renaming it (`.evicted-*`, skipped by every reader), and `sweep`
deletes those files afterwards. Sizes come from one directory scan (a venv's size is
measured once, after its build).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator

from ...images.layers import tree_size
from ...images.venv_recipe import COMPLETE

log = logging.getLogger("ferry.node")

TARGET = 0.8  # an eviction stops once the cache is at most this share of the bound
EVICT_LOCK = ".evict.lock"
PINS = "pins"
EVICTIONS_LOG = "evictions.log"
EVICTED_PREFIX = ".evicted-"
_PIN_IDS = itertools.count()
SIZE_SUFFIX = ".size"  # images/venvs/<key>.size, layers/<sha256>.size: bytes, measured once
_DIGEST = re.compile(r"[0-9a-f]{64}")


@contextlib.contextmanager
def _evict_lock(root: Path, mode: int) -> Iterator[bool]:
    """`.evict.lock` held with `mode` (LOCK_SH, or LOCK_EX | LOCK_NB: False when taken)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / EVICT_LOCK, "a") as handle:
        try:
            fcntl.flock(handle, mode)
        except BlockingIOError:
            yield False
            return
        yield True


def touch(path: Path) -> None:
    """Mark a cache entry used now (its modification time is its last use)."""
    try:
        os.utime(path)
    except FileNotFoundError:
        pass


class Pin:
    """The cache entries one process uses (see the module docstring), held until `release`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.entries: set[str] = set()
        self._file: IO[str] | None = None

    def add(self, entries: Iterable[str]) -> None:
        """Pin `entries` too, and mark them used."""
        new = set(entries) - self.entries
        if not new:
            return
        with _evict_lock(self.root, fcntl.LOCK_SH):
            if self._file is None:
                (self.root / PINS).mkdir(parents=True, exist_ok=True)
                # one file per pin: a node agent (node_agent.py) holds several containers' pins in one process
                self._file = open(self.root / PINS / f"{os.getpid()}.{next(_PIN_IDS)}", "w")
                fcntl.flock(self._file, fcntl.LOCK_EX)
            self.entries |= new
            self._file.seek(0)
            self._file.truncate()
            self._file.write("".join(f"{entry}\n" for entry in sorted(self.entries)))
            self._file.flush()
        for entry in new:
            touch(entry_path(self.root, entry))

    def release(self) -> None:
        """Let go of every entry (marked used now, as their last use)."""
        for entry in self.entries:
            touch(entry_path(self.root, entry))
        if self._file is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._file.name)
            self._file.close()
            self._file = None
        self.entries = set()


def entry_path(root: Path, entry: str) -> Path:
    """Where the entry named `entry` ("venv <key>", "blob <digest>", ...) lives."""
    kind, _, name = entry.partition(" ")
    return {"venv": root / "images" / "venvs", "layer": root / "layers", "blob": root / "blobs",
            "mount": root / "mounts",
            "code": root / "home" / "mounts",
            "chunk": root / "home" / "volumes" / "cache" / name[:2]}[kind] / name


def venv_entry(root: Path, python: str) -> str | None:
    """The entry ("venv <key>") of the venv under `root` whose interpreter `python` is, or None
    (the node's own Python)."""
    try:
        relative = Path(python).relative_to(root / "images" / "venvs")
    except ValueError:
        return None
    return f"venv {relative.parts[0]}" if len(relative.parts) > 1 else None


def _pinned(root: Path) -> set[str]:
    """Entries named by pins whose process holds them; pins nobody holds are removed."""
    pinned: set[str] = set()
    directory = root / PINS
    for path in directory.iterdir() if directory.is_dir() else []:
        try:
            handle = open(path)
        except FileNotFoundError:
            continue
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:  # held: its process uses these
                pinned.update(line.strip() for line in handle if line.strip())
                continue
            path.unlink(missing_ok=True)  # its process is gone
    return pinned


@dataclass
class Entry:
    name: str
    path: Path
    size: int
    used: float


def _entries(root: Path) -> Iterator[Entry]:
    venvs = root / "images" / "venvs"
    for item in _scan(venvs):
        if item.is_dir() and not item.name.endswith(".logs") and not item.name.startswith("."):
            yield Entry(f"venv {item.name}", Path(item.path), _venv_size(venvs, item.name), item.stat().st_mtime)
    layers = root / "layers"
    for item in _scan(layers):
        if item.is_dir() and _DIGEST.fullmatch(item.name):
            yield Entry(f"layer {item.name}", Path(item.path), _layer_size(layers, item.name), item.stat().st_mtime)
    for kind, directory in (("blob", root / "blobs"), ("mount", root / "mounts"), ("code", root / "home" / "mounts")):
        for item in _scan(directory):
            if not item.name.startswith("."):
                size = item.stat().st_size if item.is_file() else tree_size(Path(item.path))
                yield Entry(f"{kind} {item.name}", Path(item.path), size, item.stat().st_mtime)
    for shard in _scan(root / "home" / "volumes" / "cache"):
        for item in _scan(Path(shard.path)):
            if not item.name.startswith("."):
                info = item.stat()
                yield Entry(f"chunk {item.name}", Path(item.path), info.st_size, info.st_mtime)


def _scan(directory: Path) -> list[os.DirEntry]:
    try:
        return list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _venv_size(venvs: Path, key: str) -> int:
    """The venv's measured size, measured now if its build did not (a venv built before)."""
    record = venvs / f"{key}{SIZE_SUFFIX}"
    try:
        return int(record.read_text())
    except (FileNotFoundError, ValueError):
        pass
    size = tree_size(venvs / key) + tree_size(venvs / f"{key}.logs")
    if (venvs / key / COMPLETE).is_file():
        record.write_text(str(size))
    return size


def _layer_size(layers: Path, digest: str) -> int:
    """An unpacked layer's measured size (`<sha256>.size`, written after its unpack), measured
    now if it has none."""
    record = layers / f"{digest}{SIZE_SUFFIX}"
    try:
        return int(record.read_text())
    except (FileNotFoundError, ValueError):
        pass
    size = tree_size(layers / digest)
    record.write_text(str(size))
    return size


def record_layer_size(layers: Path, digest: str) -> None:
    """Measure a layer just unpacked (read from this record by every later eviction)."""
    (layers / f"{digest}{SIZE_SUFFIX}").unlink(missing_ok=True)
    _layer_size(layers, digest)


def record_venv_size(venvs: Path, key: str) -> None:
    """Measure a venv just built (its size is read from this record by every later eviction)."""
    (venvs / f"{key}{SIZE_SUFFIX}").unlink(missing_ok=True)
    _venv_size(venvs, key)


def _remove(entry: Entry) -> bool:
    """Take the entry out of the cache at once (renamed to `.evicted-*`, deleted by `sweep`: an
    entry is never found half removed); False for a venv someone is checking or building."""
    if entry.name.startswith("layer "):
        _discard(entry.path)
        entry.path.with_name(f"{entry.path.name}{SIZE_SUFFIX}").unlink(missing_ok=True)
        return True
    if not entry.name.startswith("venv "):
        _discard(entry.path)
        return True
    venvs, key = entry.path.parent, entry.path.name
    with open(venvs / f"{key}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        (entry.path / COMPLETE).unlink(missing_ok=True)
        _discard(entry.path)
        _discard(venvs / f"{key}.logs")
        (venvs / f"{key}{SIZE_SUFFIX}").unlink(missing_ok=True)
    return True


def _discard(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.rename(path, path.with_name(f"{EVICTED_PREFIX}{path.name}-{os.getpid()}"))


def sweep(root: Path) -> None:
    """Delete what evictions took out of the cache (`.evicted-*`), now or left by an agent
    that ended before it had deleted them."""
    for directory in (root / "images" / "venvs", root / "layers", root / "blobs", root / "mounts",
                      root / "home" / "mounts", *(Path(shard.path) for shard in _scan(root / "home" / "volumes" / "cache"))):
        for item in _scan(directory):
            if item.name.startswith(EVICTED_PREFIX):
                with contextlib.suppress(FileNotFoundError):
                    shutil.rmtree(item.path) if item.is_dir(follow_symlinks=False) else os.unlink(item.path)


def evict(root: Path, max_bytes: int) -> list[Entry]:
    """Keep the cache at `root` under `max_bytes` (0: no bound), least recently used entries
    first, never one in use; the entries taken out (their files deleted by `sweep`). Another
    eviction running: nothing to do."""
    if max_bytes <= 0:
        return []
    with _evict_lock(root, fcntl.LOCK_EX | fcntl.LOCK_NB) as held:
        if not held:
            return []
        entries = sorted(_entries(root), key=lambda e: e.used)
        total = sum(e.size for e in entries)
        if total <= max_bytes:
            return []
        pinned = _pinned(root)
        evicted = []
        for entry in entries:
            if total <= max_bytes * TARGET:
                break
            if entry.name in pinned or not _remove(entry):
                continue
            total -= entry.size
            evicted.append(entry)
    if evicted:
        _log(root, evicted, total, max_bytes)
    return evicted


def _log(root: Path, evicted: list[Entry], total: int, max_bytes: int) -> None:
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    with open(root / EVICTIONS_LOG, "a") as journal:
        for entry in evicted:
            journal.write(f"{now} evicted {entry.name} ({entry.size:,} bytes, last used "
                          f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(entry.used))})\n")
    log.warning("node cache %s: evicted %d entries (%s); %s bytes left of a %s-byte bound", root, len(evicted),
                ", ".join(e.name[:17] for e in evicted[:8]), f"{total:,}", f"{max_bytes:,}")


def max_bytes() -> int:
    """FERRY_NODE_CACHE_MAX_GB of this node, in bytes (0: no bound)."""
    from .... import _config

    return int(float(_config.get("node_cache_max_gb")) * 1024 ** 3)
