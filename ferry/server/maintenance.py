"""The server's housekeeping: bounded storage, and what `ferry server status` reports about it.

    every FERRY_MAINTENANCE_INTERVAL seconds (and `server.gc`, `ferry server gc`):
        1. log retention            server/retention.py (per app, by age and size)
        2. anonymous secrets        those no live app refers to (server/secrets.py)
        3. blobs and volume chunks  mark and sweep with a grace period (server/blob_gc.py)
    when an app stops, and once at start: step 2 (secrets given by value die with their app)

Heavy work (SQLite scans, walking the blob store, reading manifests) runs in worker threads;
only gathering the roots from the server's memory runs on its loop. Ephemeral dicts, queues
and volumes need nothing here: they are deleted when the connection that made them closes,
and at start (server/named_objects.py, server/volumes.py); their data then has no root.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from .. import _config
from .._secret import ANONYMOUS_PREFIX
from ..exception import InvalidError
from . import blob_gc
from .blob_gc import gather_roots, strings
from .images.layers import tree_size
from .retention import LogRetention, log_bytes, prune_logs

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger("ferry.server")


class Maintenance:
    """Runs the maintenance pass periodically and on request."""

    def __init__(self, server: "Server") -> None:
        self.server = server
        self.interval: float = _config.get("maintenance_interval")
        self.grace: float = _config.get("gc_grace_seconds")
        if self.interval < 0 or self.grace < 0:
            raise InvalidError("FERRY_MAINTENANCE_INTERVAL and FERRY_GC_GRACE_SECONDS must be 0 or more.")
        self.retention = LogRetention.from_settings()
        self._lock = asyncio.Lock()  # one pass at a time
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self.drop_unused_secrets()  # apps that stopped while the server was down
        if self.interval > 0:
            self._task = asyncio.create_task(self._loop())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                report = await self.run(dry_run=False)
                log.info("maintenance pass: %s", report)
            except Exception:  # noqa: BLE001 - the next pass tries again; the cause goes to the log
                log.exception("the maintenance pass failed")

    # -- the steps --------------------------------------------------------------------------
    def drop_unused_secrets(self) -> int:
        """Delete anonymous secrets no live app refers to (held ones stay: server/secrets.py)."""
        values = gather_roots(self.server, payloads=False).values
        in_use = {s for value in values for s in strings(value) if s.startswith(ANONYMOUS_PREFIX)}
        dropped = self.server.secrets.drop_unused_anonymous(in_use)
        if dropped:
            log.info("deleted %d anonymous secret(s) no live app uses", dropped)
        return dropped

    async def run(self, *, dry_run: bool) -> dict[str, Any]:
        """One maintenance pass (with `dry_run`: garbage collection only reports)."""
        async with self._lock:
            started = time.time()
            report: dict[str, Any] = {"started": started, "dry_run": dry_run}
            if not dry_run:
                self.server.logs.flush()
                report["log_lines_deleted"] = await asyncio.to_thread(
                    prune_logs, self.server.store.path, self.retention)
                report["anonymous_secrets_deleted"] = self.drop_unused_secrets()
            roots = gather_roots(self.server)
            report["blobs"] = await asyncio.to_thread(
                blob_gc.collect, self.server.blobs, roots, self.server.home / "images", grace=self.grace,
                dry_run=dry_run, mounts_root=self.server.images.mounts_root)
            report["seconds"] = time.time() - started
            return report

    # -- space used, by kind (`ferry server status`) ----------------------------------------
    async def space(self) -> dict[str, int]:
        """Bytes on disk of each kind of stored data."""
        manifests = set(self.server.store.volume_manifests()) | {self.server.volumes.store.empty}
        return await asyncio.to_thread(self._space, manifests)

    def _space(self, manifests: set[str]) -> dict[str, int]:
        db = self.server.store.path
        state = sum(os.path.getsize(p) for p in (db, f"{db}-wal", f"{db}-shm") if os.path.exists(p))
        cache = self.server.images.list_images()
        return {
            "state_db": state,
            "logs": log_bytes(db),  # (part of state_db)
            **blob_gc.census(self.server.blobs, manifests),
            "image_layers": int(cache["layers_bytes"]),
            "base_rootfs": sum(int(size) for size in cache["bases"].values()),
            "venvs": tree_size(self.server.images.store.venvs),
        }
