"""Spare sandboxes on a sandbox node (node_sandbox.py): the second and later containers of a
kind on a node become a sandbox its agent started ahead, as on one machine
(sandbox/spares.py, whose pool, sandbox/spare_pool.py, this shares).

    kind = the image's layers, add_local_* files, the control plane's address (and TLS
           fingerprint), network mode, cpu=/memory= limits
    claim = the container's environment: its ids, credential and secrets, which the spare never had

A spare is a node sandbox like any other (the same namespaces, the same writable layer under
`$FERRY_NODE_CACHE/sandboxes/<agent pid>-spare-<id>`, its own relay to the control plane) and
becomes exactly one container. It holds no Ray resources: the container that claims it brings
its placement group. Its cgroup, with the kind's cpu=/memory= limits, is made with it (as on one
machine), so what it uses before its claim is counted against the container it becomes. It
dies with its agent as a container does (bubblewrap's --die-with-parent). At most
FERRY_SANDBOX_SPARES wait on a node (the agent's environment, that is `ray start`'s; 0: none),
one per kind; one unclaimed for two minutes is ended. Containers with volumes start the
ordinary way. A spare pins its image's layers and files in the node's cache (node_cache.py)
from its start until it, or the container it became, has ended, so no eviction removes them
under it.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any, Callable

from ..base import OutputSink
from ..sandbox.spare_pool import Prepared, SparePool, kind_key, sandbox_kind_parts
from .node_cache import Pin
from .node_layers import NodeLayers
from .node_sandbox import (Started, container_env, limits_cgroup, open_scratch, sandbox_spec,
                           unenforced_limits)


def _ignore(_: tuple[str, str]) -> None:
    pass


class NodeSpares:
    """The spare sandboxes of one node's agent."""

    def __init__(self, limit: int) -> None:
        self.pool = SparePool(limit)

    def can_serve(self, launch: dict[str, Any]) -> bool:
        """Whether a spare can become this container (no volumes: per-container views)."""
        return self.pool.limit > 0 and not launch.get("volumes")

    async def kind_of(self, launch: dict[str, Any], cache: Path, node_id: str) -> str:
        """What a spare for `launch`'s container must have been started with."""
        spec = await sandbox_spec(launch, cache, node_id, cache / "sandboxes" / "kind", spare_fd=0)
        return kind_key({**sandbox_kind_parts(spec), "server": launch["server_url"],
                         "cpu": launch.get("cpu"), "memory_mb": launch.get("memory_mb")})

    async def claim(self, launch: dict[str, Any], cache: Path, node_id: str, on_output: OutputSink,
                    note: Callable[[tuple[str, str]], None]) -> Started | None:
        """Make the waiting spare of `launch`'s kind this container (None when none waits), and
        start another of its kind in the background."""
        kind = await self.kind_of(launch, cache, node_id)
        manifest = launch["sandbox"]
        claim = {"env": container_env(manifest, launch, node_id), "cwd": manifest.get("workdir") or "/root",
                 "module": launch.get("entry_module") or "ferry._container"}
        spare = self.pool.take(kind, claim, on_output)
        self.pool.replenish(kind, lambda spare_id, claim_fd: self._prepare(launch, cache, node_id, spare_id,
                                                                             claim_fd))
        if spare is None:
            return None
        if spare.cgroup is None and (launch.get("cpu") is not None or launch.get("memory_mb") is not None):
            note(unenforced_limits(node_id))  # (a spare of a kind with limits has their cgroup, where it can)
        return Started(spare.process, spare.cgroup, spare.cleanup, spare.readers)

    async def _prepare(self, launch: dict[str, Any], cache: Path, node_id: str, spare_id: str,
                       claim_fd: int) -> Prepared:
        pin = Pin(cache)  # its layers and files stay in the node's cache while it lives (node_cache.py)
        await asyncio.to_thread(pin.add, NodeLayers(cache).entries(launch["sandbox"]))
        try:
            scratch, relay = await open_scratch(cache, spare_id, launch["server_url"])
        except BaseException:
            pin.release()
            raise

        def cleanup() -> None:
            relay.close()
            shutil.rmtree(scratch, ignore_errors=True)
            pin.release()

        try:
            spec = await sandbox_spec(launch, cache, node_id, scratch, spare_fd=claim_fd)
            await relay.start()
            cgroup = limits_cgroup(spare_id, launch, node_id, _ignore)
        except BaseException:
            cleanup()
            raise
        return Prepared(spec, cgroup, cleanup)

    def waiting(self) -> list[dict[str, Any]]:
        """The spares waiting now: {kind, pid} (pid: its launcher, bubblewrap)."""
        return [{"kind": spare.kind, "pid": spare.process.pid} for spare in self.pool.waiting()]
