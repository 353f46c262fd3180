"""What a volume's files look like on the wire and in a snapshot manifest, shared by the SDK,
the CLI, containers and the server (standard library and msgpack only: containers import it).

A volume's content at one commit is a manifest: `path -> Entry`, paths relative to the
volume's root (`"models/config.json"`, never a leading `/`, never `..`). An entry is

    Entry(kind, size, mode, mtime, data)
        kind  "f" file, "d" directory, "l" symbolic link
        size  bytes (files), 0 otherwise
        mode  permission bits (st_mode & 0o7777)
        mtime seconds since the epoch (float)
        data  files: the SHA-256 hex digests of the file's chunks (CHUNK_SIZE bytes each, the
              last one shorter; an empty file has none); links: the target; directories: None

File contents live in the control plane's content-addressed blob store, one blob per chunk,
so equal chunks are stored and transferred once. On the wire an entry is the list
`[path, kind, size, mode, mtime, data]`; a manifest blob is the msgpack map
`{"format": 1, "entries": [those lists, sorted by path]}`.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Iterable, Iterator, NamedTuple

import msgpack

from .exception import InvalidError

CHUNK_SIZE = 8 * 1024 * 1024
TRANSFER_BATCH_BYTES = 16 * 1024 * 1024  # chunk data per put/get request
MANIFEST_PAGE = 50_000                  # entries per `volume.manifest` answer

FILE, DIR, LINK = "f", "d", "l"
KINDS = (FILE, DIR, LINK)

V1_MAX_FILES = 500_000
V2_MAX_DIR_ENTRIES = 32_768
V2_MAX_FILE_SIZE = 1 << 40  # files must be smaller than 1 TiB
VERSIONS = (1, 2)


_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def check_volume_name(name: Any) -> str:
    """A valid volume name, or InvalidError saying what a name may contain."""
    if not isinstance(name, str) or not 1 <= len(name) <= 64 or not name[0].isalnum() \
            or not set(name) <= _NAME_CHARS:
        raise InvalidError(f"Invalid volume name {name!r}: use 1 to 64 letters, digits, '.', '-' or '_', "
                           "starting with a letter or digit.")
    return name


class Entry(NamedTuple):
    """One path of a volume (see the module docstring)."""

    kind: str
    size: int
    mode: int
    mtime: float
    data: Any  # tuple of chunk digests | link target | None

    def wire(self, path: str) -> list[Any]:
        data = list(self.data) if self.kind == FILE else self.data
        return [path, self.kind, self.size, self.mode, self.mtime, data]


Manifest = dict[str, Entry]


def clean_path(path: Any, *, what: str = "path", allow_root: bool = True) -> str:
    """`path` relative to the volume's root: '/a//b/./c' -> 'a/b/c'; the root is ''."""
    if not isinstance(path, str):
        raise InvalidError(f"A volume {what} must be a str, got {type(path).__name__}.")
    if "\0" in path:
        raise InvalidError(f"Volume {what} {path!r} contains a NUL character.")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidError(f"Volume {what} {path!r} must not contain '..'; give the path from the volume's root.")
    if not parts and not allow_root:
        raise InvalidError(f"Volume {what} {path!r} names the volume's root; give a path inside it.")
    return "/".join(parts)


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


def ancestors(path: str) -> Iterator[str]:
    """The directories above `path`, nearest first, without the root."""
    while "/" in path:
        path = path.rpartition("/")[0]
        yield path


def entry_from_wire(item: Any) -> tuple[str, Entry]:
    """A checked `(path, Entry)` from its wire list; InvalidError for anything malformed."""
    if not isinstance(item, (list, tuple)) or len(item) != 6:
        raise InvalidError("Malformed volume entry; upgrade the client to the server's version.")
    path, kind, size, mode, mtime, data = item
    path = clean_path(path, allow_root=False)
    if kind not in KINDS or not isinstance(size, int) or size < 0 or not isinstance(mode, int) \
            or not isinstance(mtime, (int, float)):
        raise InvalidError(f"Malformed volume entry for {path!r}.")
    if kind == FILE:
        if not isinstance(data, (list, tuple)) or not all(_is_digest(d) for d in data):
            raise InvalidError(f"Malformed chunk list for {path!r}.")
        data = tuple(data)
    elif kind == LINK:
        if not isinstance(data, str) or not data or "\0" in data:
            raise InvalidError(f"Malformed link target for {path!r}.")
    else:
        data = None
    return path, Entry(kind, size if kind == FILE else 0, mode & 0o7777, float(mtime), data)


def _is_digest(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def pack_manifest(entries: Manifest) -> bytes:
    return msgpack.packb({"format": 1, "entries": [entries[p].wire(p) for p in sorted(entries)]},
                         use_bin_type=True)


def unpack_manifest(data: bytes) -> Manifest:
    body = msgpack.unpackb(data, raw=False)
    return {item[0]: Entry(item[1], item[2], item[3], item[4], tuple(item[5]) if item[1] == FILE else item[5])
            for item in body["entries"]}


def manifest_from_wire(items: Iterable[Any]) -> Manifest:
    return {item[0]: Entry(item[1], item[2], item[3], item[4], tuple(item[5]) if item[1] == FILE else item[5])
            for item in items}


# -- limits ---------------------------------------------------------------------------------
def check_file_size(version: int, path: str, size: int, volume: str) -> None:
    """Version 2 volumes hold files smaller than 1 TiB."""
    if version == 2 and size >= V2_MAX_FILE_SIZE:
        raise InvalidError(f"{path!r} is {size:,} bytes: files in version 2 volumes (such as {volume!r}) must be "
                           "smaller than 1 TiB. Split the file into parts.")


def check_limits(version: int, entries: Manifest, children: dict[str, int], volume: str) -> None:
    """Raise InvalidError if `entries` (with `children`: directory -> number of entries in it)
    break the limits of a volume of `version`."""
    if version == 1:
        files = sum(1 for e in entries.values() if e.kind != DIR)
        if files > V1_MAX_FILES:
            raise InvalidError(
                f"Volume {volume!r} would hold {files:,} files, over the limit of {V1_MAX_FILES:,} for version 1 "
                "volumes. Remove files, or move them to a version 2 volume "
                "(Volume.from_name(name, version=2, create_if_missing=True)), which has no total limit.")
        return
    crowded = [(d, n) for d, n in children.items() if n > V2_MAX_DIR_ENTRIES]
    if crowded:
        directory, count = max(crowded, key=lambda item: item[1])
        raise InvalidError(
            f"Directory {('/' + directory) if directory else '/'} of volume {volume!r} would hold {count:,} "
            f"entries, over the limit of {V2_MAX_DIR_ENTRIES:,} per directory of version 2 volumes. "
            "Spread the files over subdirectories.")
    for path, entry in entries.items():
        if entry.kind == FILE:
            check_file_size(version, path, entry.size, volume)


def count_children(entries: Manifest) -> dict[str, int]:
    """Directory path ('' for the root) -> number of entries directly in it."""
    counts: dict[str, int] = {}
    for path in entries:
        parent = parent_of(path)
        counts[parent] = counts.get(parent, 0) + 1
    return counts


# -- reading local files in chunks --------------------------------------------------------
def file_chunks(path: str | os.PathLike[str]) -> tuple[list[str], int]:
    """The chunk digests of a local file and its size (read once)."""
    digests, size = [], 0
    with open(path, "rb") as handle:
        while True:
            data = handle.read(CHUNK_SIZE)
            if not data:
                break
            digests.append(hashlib.sha256(data).hexdigest())
            size += len(data)
    return digests, size


def bytes_chunks(data: bytes) -> list[str]:
    return [hashlib.sha256(data[i:i + CHUNK_SIZE]).hexdigest() for i in range(0, len(data), CHUNK_SIZE)]


def read_chunk(path: str | os.PathLike[str], index: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(index * CHUNK_SIZE)
        return handle.read(CHUNK_SIZE)
