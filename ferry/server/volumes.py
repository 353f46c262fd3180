"""The volume store: named volumes whose committed files live in the blob store.

    SQLite  volumes(id, name, version, ephemeral, created)
            volume_commits(volume_id, seq, manifest, files, bytes, created)   head = highest seq
    blobs   file chunks, and one manifest blob per commit (format: ferry/_volume_files.py)

A commit applies a change set (the paths a writer put or deleted) to the volume's CURRENT
head, in three steps:
    1. load the head manifest and apply the change set (checks, limits)
    2. flush the blob store (syncfs: uploaded chunks), write the new manifest blob with fsync
    3. insert the commit row: one INSERT, atomic
A server killed at any point leaves the previous head (before 3) or the new one (after 3): at
worst an unreferenced manifest blob, never a half-applied commit. Callers serialise commits
per volume (`VolumeService` holds a lock per volume), so seq numbers never collide.

Concurrency rules, since a change set carries only what its writer changed:
- commits to different paths all land; to the same path, the last commit wins (whole files:
  a file is never a mix of two writers);
- a directory that one writer deleted while another added entries to it is kept, with them;
- puts create missing parent directories; a file or link that replaces a directory removes
  what was in it (`overwrite="always"`, container commits only).
"""

from __future__ import annotations

import bisect
import secrets
import threading
from collections import OrderedDict
from typing import Any, Iterable, NamedTuple

from .._volume_files import (
    DIR, FILE, Entry, Manifest, ancestors, check_limits, check_volume_name, count_children,
    pack_manifest, parent_of, unpack_manifest,
)
from ..exception import InvalidError, NotFoundError
from .blobs import BlobStore
from .store import Store

EPHEMERAL_PREFIX = "ephemeral-"
_CACHED_MANIFESTS = 4
_CACHED_ENTRIES = 2_000_000  # (about 400 MB of manifests in memory at most)
OVERWRITE_MODES = ("always", "files", "never")


class Snapshot(NamedTuple):
    """A manifest with its paths sorted (for directory listings by prefix)."""

    entries: Manifest
    paths: list[str]

    def under(self, path: str) -> list[str]:
        """Every path strictly below directory `path` ('' is the root)."""
        if not path:
            return self.paths
        start = bisect.bisect_left(self.paths, path + "/")
        end = bisect.bisect_left(self.paths, path + "0")  # '0' sorts right after '/'
        return self.paths[start:end]


class Prepared(NamedTuple):
    """A commit whose manifest is written, not yet recorded (`VolumeStore.record`)."""

    volume_id: str
    name: str
    seq: int
    manifest: str
    files: int
    bytes: int


def apply_changes(head: Manifest, puts: Manifest, deletes: Iterable[str], *, overwrite: str,
                  volume: str) -> tuple[Manifest, dict[str, int]]:
    """The entries after applying a change set to `head`, and directory -> entry counts.

    `overwrite`: "always" (container commits: the last writer wins, even over a directory),
    "files" (`batch_upload(force=True)`, copies: files replace files, not directories),
    "never" (`batch_upload()`: an existing file is an error)."""
    if overwrite not in OVERWRITE_MODES:
        raise InvalidError(f"Unknown overwrite mode {overwrite!r}.")
    entries = dict(head)
    emptied: list[str] = []
    for path in deletes:
        found = entries.get(path)
        if found is not None and found.kind == DIR:
            emptied.append(path)  # removed below, if nothing is left in it
        elif found is not None:
            del entries[path]
    for path in sorted(puts):  # parents before children
        entry = puts[path]
        existing = entries.get(path)
        if existing is not None and not (existing.kind == DIR and entry.kind == DIR):
            if overwrite == "never":
                raise InvalidError(f"{path!r} already exists in volume {volume!r}; pass force=True to replace "
                                   "files (`ferry volume put --force`).")
            if existing.kind == DIR:
                if overwrite != "always":
                    raise InvalidError(f"{path!r} is a directory in volume {volume!r}; a file cannot replace it. "
                                       "Remove the directory first.")
                for below in [p for p in entries if p.startswith(path + "/")]:
                    del entries[below]
        for parent in ancestors(path):
            found = entries.get(parent)
            if found is not None and found.kind == DIR:
                break  # (its own parents exist: every entry's parents do)
            if found is not None and overwrite != "always":
                raise InvalidError(f"{parent!r} is a file in volume {volume!r}, so {path!r} cannot go under it.")
            entries[parent] = Entry(DIR, 0, 0o755, entry.mtime, None)
        entries[path] = entry
    children = count_children(entries)
    for path in sorted(emptied, key=lambda p: p.count("/"), reverse=True):
        if path in entries and entries[path].kind == DIR and not children.get(path):
            del entries[path]
            children[parent_of(path)] -= 1
    return entries, children


def remove_changes(snapshot: Snapshot, path: str, recursive: bool, volume: str) -> list[str]:
    """The deletes of `remove_file(path, recursive)`."""
    found = snapshot.entries.get(path)
    if found is None:
        raise NotFoundError(f"No file or directory {path!r} in volume {volume!r}.")
    below = snapshot.under(path) if found.kind == DIR else []
    if below and not recursive:
        raise InvalidError(f"{path!r} is a directory that is not empty; remove it with recursive=True "
                           "(`ferry volume rm -r`).")
    return [path, *below]


def copy_changes(snapshot: Snapshot, sources: list[str], destination: str, *, into: bool,
                 recursive: bool, volume: str) -> Manifest:
    """The puts of `copy_files(sources, destination)`, with the `cp` command's rules: into an
    existing directory (or when `into`: several sources, or a trailing '/'), else to that path."""
    target = snapshot.entries.get(destination)
    into = into or destination == "" or (target is not None and target.kind == DIR)
    if len(sources) > 1 and target is not None and target.kind != DIR:
        raise InvalidError(f"Copying {len(sources)} paths needs a directory as the destination; "
                           f"{destination!r} is a file in volume {volume!r}.")
    puts: Manifest = {}
    for source in sources:
        entry = snapshot.entries.get(source)
        if entry is None:
            raise NotFoundError(f"No file or directory {source!r} in volume {volume!r}.")
        name = source.rpartition("/")[2]
        dest = (f"{destination}/{name}" if destination else name) if into else destination
        if entry.kind == DIR:
            if not recursive:
                raise InvalidError(f"{source!r} is a directory; copy it with recursive=True (`ferry volume cp -r`).")
            if dest == source or dest.startswith(source + "/"):
                raise InvalidError(f"Cannot copy directory {source!r} into itself ({dest!r}).")
            for below in snapshot.under(source):
                puts[dest + below[len(source):]] = snapshot.entries[below]
        puts[dest] = entry
    return puts


class VolumeStore:
    """Volumes and their commits. Blocking; `prepare` may run in a worker thread, everything
    else on the server's loop (SQLite)."""

    def __init__(self, store: Store, blobs: BlobStore) -> None:
        self.store = store
        self.blobs = blobs
        self.empty = blobs.put(pack_manifest({}), durable=True)
        self._cache: OrderedDict[str, Snapshot] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.delete_ephemeral()  # they belonged to connections of a previous server run

    # -- volumes --------------------------------------------------------------------------
    def create(self, name: str | None, *, version: int | None = None, ephemeral: bool = False) -> dict[str, Any]:
        version = 1 if version is None else version
        if version not in (1, 2):
            raise InvalidError(f"Volume version must be 1 or 2, got {version!r}.")
        if ephemeral:
            name = EPHEMERAL_PREFIX + secrets.token_hex(8)
        else:
            check_volume_name(name)
            if self.store.volume(name=name) is not None:
                raise InvalidError(f"Volume {name!r} already exists. See `ferry volume list`.")
        assert name is not None
        return self.store.insert_volume("vo-" + secrets.token_hex(8), name, version, ephemeral)

    def find(self, *, name: str | None = None, volume_id: str | None = None) -> dict[str, Any]:
        row = self.store.volume(name=name, volume_id=volume_id)
        if row is None:
            if name is not None:
                raise NotFoundError(f"Volume {name!r} not found. Create it with `ferry volume create {name}`, or "
                                    f"use Volume.from_name({name!r}, create_if_missing=True).")
            raise NotFoundError(f"Volume {volume_id!r} no longer exists (was it deleted?).")
        return row

    def get(self, name: str, *, create_if_missing: bool = False, version: int | None = None) -> dict[str, Any]:
        row = self.store.volume(name=check_volume_name(name))
        if row is None and create_if_missing:
            return self.create(name, version=version)
        if row is None:
            return self.find(name=name)
        if version is not None and version != row["version"]:
            raise InvalidError(f"Volume {name!r} is a version {row['version']} volume, but version={version} was "
                               f"asked for. Drop version= or use another name (a volume's version is fixed).")
        return row

    def list(self) -> list[dict[str, Any]]:
        return [row for row in self.store.volumes() if not row["ephemeral"]]

    def delete(self, name: str) -> dict[str, Any]:
        row = self.find(name=name)
        self.store.delete_volume(row["id"])
        return row

    def delete_by_id(self, volume_id: str) -> None:
        self.store.delete_volume(volume_id)

    def rename(self, old: str, new: str) -> dict[str, Any]:
        row = self.find(name=old)
        check_volume_name(new)
        if self.store.volume(name=new) is not None:
            raise InvalidError(f"Volume {new!r} already exists; choose another name.")
        self.store.rename_volume(row["id"], new)
        return {**row, "name": new}

    def delete_ephemeral(self) -> None:
        """Ephemeral volumes belong to client connections, which a restart ended."""
        for row in self.store.volumes():
            if row["ephemeral"]:
                self.store.delete_volume(row["id"])

    # -- content --------------------------------------------------------------------------
    def head(self, volume_id: str) -> tuple[int, str]:
        seq, digest = self.store.volume_head(volume_id)
        return seq, digest or self.empty

    def snapshot(self, digest: str) -> Snapshot:
        """The manifest `digest` (kept in a small cache; safe from any thread)."""
        with self._cache_lock:
            found = self._cache.get(digest)
            if found is not None:
                self._cache.move_to_end(digest)
                return found
        entries = unpack_manifest(self.blobs.get(digest))
        snapshot = Snapshot(entries, sorted(entries))
        self._remember(digest, snapshot)
        return snapshot

    def _remember(self, digest: str, snapshot: Snapshot) -> None:
        with self._cache_lock:
            self._cache[digest] = snapshot
            while len(self._cache) > 1 and (len(self._cache) > _CACHED_MANIFESTS or sum(
                    len(s.paths) for s in self._cache.values()) > _CACHED_ENTRIES):
                self._cache.popitem(last=False)

    def prepare(self, volume: dict[str, Any], head: tuple[int, str], puts: Manifest, deletes: Iterable[str], *,
                overwrite: str = "always") -> Prepared:
        """Steps 1 and 2 of a commit on top of `head` (the volume's `head()` now; see the module
        docstring). Blocking, no SQLite, slow for big volumes: run it off the event loop."""
        seq, digest = head
        self._check_chunks(puts, volume["name"])
        entries, children = apply_changes(self.snapshot(digest).entries, puts, deletes, overwrite=overwrite,
                                          volume=volume["name"])
        check_limits(volume["version"], entries, children, volume["name"])
        self.blobs.sync()  # the uploaded chunks reach the disk before anything refers to them
        manifest = self.blobs.put(pack_manifest(entries), durable=True)
        self._remember(manifest, Snapshot(entries, sorted(entries)))
        files = sum(1 for e in entries.values() if e.kind != DIR)
        size = sum(e.size for e in entries.values() if e.kind == FILE)
        return Prepared(volume["id"], volume["name"], seq + 1, manifest, files, size)

    def record(self, prepared: Prepared) -> dict[str, Any]:
        """Step 3: make the prepared manifest the head (one INSERT)."""
        if not self.store.insert_volume_commit(prepared.volume_id, prepared.seq, prepared.manifest,
                                               prepared.files, prepared.bytes):
            raise NotFoundError(f"Volume {prepared.name!r} was deleted; the commit was dropped.")
        return {"seq": prepared.seq, "hash": prepared.manifest, "files": prepared.files, "bytes": prepared.bytes}

    def commit(self, volume: dict[str, Any], puts: Manifest, deletes: Iterable[str] = (), *,
               overwrite: str = "always") -> dict[str, Any]:
        """Prepare and record in one go (callers that need no event loop)."""
        return self.record(self.prepare(volume, self.head(volume["id"]), puts, deletes, overwrite=overwrite))

    def _check_chunks(self, puts: Manifest, volume: str) -> None:
        for path, entry in puts.items():
            if entry.kind != FILE:
                continue
            total = 0
            for digest in entry.data:
                size = self.blobs.size(digest)
                if size is None:
                    raise InvalidError(f"The data of {path!r} was not uploaded (chunk {digest[:12]} is missing); "
                                       f"nothing was committed to volume {volume!r}.")
                total += size
            if total != entry.size:
                raise InvalidError(f"{path!r} claims {entry.size} bytes but its chunks hold {total}; "
                                   f"nothing was committed to volume {volume!r}.")
