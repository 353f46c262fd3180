"""Garbage collection of the blob store (uploaded source files, large payloads, files of image
steps, volume file chunks and manifests): mark from every root, sweep what nothing refers to.

Roots (`gather_roots` on the server's loop, stored payloads in the worker thread; every
string that is a SHA-256 digest counts):
    stored records        function definitions of apps not stopped (code mounts, image recipes:
                          copied files, requirements, pickled functions), derived pools'
                          overrides, spawned calls' arguments and outputs, journaled inputs
    memory                definitions of every installed function (running ephemeral apps
                          included), and the arguments of queued and running inputs
    volumes               the manifest of every kept commit of every volume, and the chunks of
                          every file in those manifests (`mark`, in a worker thread)
    image cache           image records and layer metadata under `$FERRY_HOME/images`
Image layers, base root filesystems and venvs live outside the blob store and are never
touched here (`ferry image rm` removes them); the tars of layers packed for sandbox nodes
(`$FERRY_HOME/images/node-tars`, ray runtime) whose layer is gone go once older than the grace
period (node_layers.collect_tars). Mounts materialised for containers
(`$FERRY_HOME/mounts/<digest>`, written from blobs, marked fresh at each container start) whose
digest no root names go once they were last marked before the grace period and before the
oldest live container or sandbox started (one draining after a redeploy keeps its old code).

Sweep rule: a blob referenced by no root is deleted only when its modification time (last
written, uploaded again, or reported present to an uploader: server/blobs.py) is older than
FERRY_GC_GRACE_SECONDS, re-checked under the blob store's lock. So an upload in progress keeps
what it sent, as long as it commits within the grace period; one that takes longer finds a
chunk missing at commit and gets a clear error (nothing is committed). Leftover `.tmp-*` files
of interrupted writes older than the grace period go too.
"""

from __future__ import annotations

import logging
import re
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from .._volume_files import FILE, unpack_manifest
from ..exception import NotFoundError
from .blobs import BlobStore
from .model import ContainerState
from .runtimes.ray.node_layers import collect_tars
from .store import unpack

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger("ferry.server")
_DIGEST = re.compile(r"[0-9a-f]{64}")


def strings(value: Any) -> Iterator[str]:
    """Every string inside `value` (dict keys and values, list items), depth first."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)


def digests(values: Iterable[Any]) -> set[str]:
    return {s for value in values for s in strings(value) if len(s) == 64 and _DIGEST.fullmatch(s)}


@dataclass
class Roots:
    """What the server refers to, gathered on its loop; `manifests` are volume manifests."""

    values: list[Any] = field(default_factory=list)
    manifests: set[str] = field(default_factory=set)
    oldest_container: float | None = None  # when the oldest live container or sandbox started (epoch)
    database: Path | None = None  # state.db, whose stored calls' payloads are read in the worker thread


def stored_payloads(database: Path) -> Iterator[Any]:
    """The arguments and outputs of stored calls: spawned calls, and the journaled inputs of
    calls in progress where the server keeps them (payloads over 2 MiB are blob digests).
    Read through a connection of its own (blocking: not on the server's loop)."""
    db = sqlite3.connect(str(database), isolation_level=None, timeout=30)
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for table in ("spawned_calls", "call_inputs"):
            if table in tables:
                for args, output in db.execute(f"SELECT args, output FROM {table}"):
                    yield unpack(args)
                    if output is not None:
                        yield unpack(output)
    finally:
        db.close()


def gather_roots(server: "Server", *, payloads: bool = True) -> Roots:
    """Every root the server's state and memory hold (see the module docstring); without
    `payloads`, only definitions (what anonymous secrets are looked for in)."""
    values: list[Any] = list(server.store.stored_definitions())
    for pool in list(server.scheduler.pools.values()):
        values.append(pool.definition)
        values.append(pool.config_overrides)
    if not payloads:
        return Roots(values=values)
    for pool in list(server.scheduler.pools.values()):
        values.extend(entry.args for entry in list(pool.queue))
        for container in list(pool.containers.values()):
            values.extend(entry.args for entry in list(container.inflight.values()))
    manifests = set(server.store.volume_manifests()) | {server.volumes.store.empty}
    starts = [c.started for c in list(server.containers.containers.values()) if c.state is not ContainerState.STOPPED]
    starts += [box.created for box in list(server.sandboxes.sandboxes.values()) if not box.ended.is_set()]
    return Roots(values=values, manifests=manifests, oldest_container=min(starts, default=None),
                 database=server.store.path)


def image_cache_values(images_root: Path) -> list[Any]:
    """Image records and layer metadata (JSON files under `$FERRY_HOME/images`)."""
    import json

    found = []
    for pattern in ("records/*.json", "layers/*.json"):
        for path in images_root.glob(pattern):
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
    return found


def volume_blobs(blobs: BlobStore, manifests: Iterable[str]) -> set[str]:
    """The manifests and every chunk of every file they list. A manifest the store lacks is
    logged (its volume's data is already gone) and skipped."""
    found: set[str] = set()
    for digest in manifests:
        found.add(digest)
        try:
            entries = unpack_manifest(blobs.get(digest))
        except NotFoundError:
            log.error("volume manifest %s is missing from the blob store", digest)
            continue
        for entry in entries.values():
            if entry.kind == FILE:
                found.update(entry.data)
    return found


def collect(blobs: BlobStore, roots: Roots, images_root: Path, *, grace: float, dry_run: bool = False,
            now: float | None = None, mounts_root: Path | None = None) -> dict[str, Any]:
    """Mark and sweep (blocking: run it in a worker thread). Returns what was found and removed."""
    now = time.time() if now is None else now
    cutoff = now - grace
    volume = volume_blobs(blobs, roots.manifests)
    live = volume | digests(roots.values) | digests(image_cache_values(images_root))
    if roots.database is not None:
        live |= digests(stored_payloads(roots.database))
    removed = removed_bytes = kept_recent = kept_live = live_bytes = 0
    for prefix, name, st in list(blobs.files()):
        if name in live:
            kept_live += 1
            live_bytes += st.st_size
            continue
        if st.st_mtime >= cutoff:
            kept_recent += 1
            continue
        if dry_run:
            removed += 1
            removed_bytes += st.st_size
            continue
        size = blobs.remove_if_stale(name, prefix, cutoff)
        if size is None:
            kept_recent += 1
        else:
            removed += 1
            removed_bytes += size
    mounts_cutoff = cutoff if roots.oldest_container is None else min(cutoff, roots.oldest_container)
    mounts = 0 if mounts_root is None else sweep_mounts(mounts_root, live, mounts_cutoff, dry_run=dry_run)
    tars, tars_bytes = collect_tars(images_root / "node-tars", cutoff, dry_run=dry_run)
    return {"dry_run": dry_run, "grace_seconds": grace, "live_blobs": kept_live, "live_bytes": live_bytes,
            "recent_unreferenced": kept_recent, "removed": removed, "removed_bytes": removed_bytes,
            "mounts_removed": mounts, "node_tars_removed": tars, "node_tars_removed_bytes": tars_bytes}


def sweep_mounts(root: Path, live: set[str], cutoff: float, *, dry_run: bool) -> int:
    """Delete materialised mounts (`<root>/<digest>`) no root names, and leftover staging
    directories, last changed before `cutoff`; returns how many."""
    removed = 0
    if not root.is_dir():
        return 0
    for entry in root.iterdir():
        name = entry.name
        ours = (len(name) == 64 and _DIGEST.fullmatch(name) and name not in live) or name.startswith(".staging-")
        try:
            stale = ours and entry.lstat().st_mtime < cutoff
        except FileNotFoundError:
            continue
        if stale:
            removed += 1
            if not dry_run:
                shutil.rmtree(entry, ignore_errors=True)
    return removed


def census(blobs: BlobStore, manifests: Iterable[str]) -> dict[str, int]:
    """Bytes of the blob store: `volume_chunks` (files and manifests of kept volume commits)
    and `blobs` (everything else). Blocking."""
    volume = volume_blobs(blobs, manifests)
    totals = {"blobs": 0, "volume_chunks": 0}
    for _, name, st in blobs.files():
        totals["volume_chunks" if name in volume else "blobs"] += st.st_size
    return totals
