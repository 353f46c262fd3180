"""A node's build of an image ahead of its containers (the ray runtime, on the node).

One `NodeBuilder` actor per node and build, pinned to its node and holding no CPU (prebuild.py
creates them when an app starts or `ferry image build` runs). On a process node it builds the
image into the node's cache exactly as a container's agent would (node_images.py: the same
venv, key, lock and logs); on a sandbox node it receives the image's layers as a container's
agent would (node_layers.py); either way a container of the image that starts there later
finds it ready.

    node_runtime                which runtime this node gives containers (node_sandbox.py)
    missing_blobs / put_blobs   the image's files the node lacks, sent by the control plane
    build                       the venv built (or found) and the files written; a failed step
                                raises the error a local build gives, naming the node's log
    missing_layers / put_layer  a sandbox node: the image's layers it lacks, then each layer
                                (node_layers.LayerReceiver); `release` lets go of them
    events                      the build's progress events since the last call (plan, step,
                                log), which the control plane forwards to the client

While it builds or receives, the image's cache entries are pinned (node_cache.py), so no eviction removes
them; the builder runs no eviction itself (containers do, when they start and end).
"""

from __future__ import annotations

import asyncio
from typing import Any

from .node_layers import LayerReceiver

EVENTS_WAIT_SECONDS = 1.0


class NodeBuilder(LayerReceiver):
    """The Ray actor that builds one image on its node (see the module docstring)."""

    def __init__(self) -> None:
        from .agent import node_cache_dir
        from .node_cache import Pin
        from .node_images import NodeImages

        self._images = NodeImages(node_cache_dir())
        self._pin = Pin(self._images.root)
        self._events: list[dict[str, Any]] = []
        self._has_events = asyncio.Event()

    async def missing_blobs(self, recipe: dict[str, Any]) -> list[str]:
        """Digests of the image's files this node lacks (its entries pinned until the build ends)."""
        return await asyncio.to_thread(self._images.missing, recipe, self._pin)

    async def put_blobs(self, blobs: dict[str, bytes]) -> None:
        await asyncio.to_thread(self._images.put, blobs)

    async def node_runtime(self, setting: str, gpu: bool = False) -> dict[str, Any]:
        """Which runtime this node gives a container under FERRY_NODE_RUNTIME=`setting`: one
        without a GPU, or (`gpu`) one holding some of the node's GPUs, which Ray numbers from 0
        unless the node's CUDA_VISIBLE_DEVICES named them when `ray start` ran (its containers
        check their own). {runtime, why}; runtime None where `sandbox` is asked and this node
        cannot."""
        from .node_sandbox import node_runtime, why_no_sandbox

        gpu_ids = [str(i) for i in range(_node_gpu_count())] if gpu else None
        reason = why_no_sandbox(gpu_ids) if setting == "sandbox" else None
        if reason is not None:
            return {"runtime": None, "why": reason}
        return node_runtime(setting, gpu_ids)

    async def release(self) -> None:
        """Let go of the layers received (marked used now)."""
        await asyncio.to_thread(self._pin.release)

    async def build(self, recipe: dict[str, Any], step_timeout: float) -> dict[str, Any]:
        """Build (or find) the image on this node: {node_id, key, built}."""
        import ray

        from ...images.venv_recipe import Progress

        loop = asyncio.get_running_loop()
        progress = Progress(lambda event: loop.call_soon_threadsafe(self._note, event))
        node_id = ray.get_runtime_context().get_node_id()
        try:
            image = await asyncio.to_thread(self._images.prepare, recipe, step_timeout, f"node {node_id}", progress)
        finally:
            await asyncio.to_thread(self._pin.release)
        return {"node_id": node_id, "key": image.key, "built": image.built}

    def _note(self, event: dict[str, Any]) -> None:
        self._events.append(event)
        self._has_events.set()

    async def events(self) -> list[dict[str, Any]]:
        """Progress events since the last call (waits up to a second for some)."""
        if not self._events:
            try:
                await asyncio.wait_for(self._has_events.wait(), EVENTS_WAIT_SECONDS)
            except asyncio.TimeoutError:
                pass
        self._has_events.clear()
        taken, self._events = self._events, []
        return taken


def _node_gpu_count() -> int:
    """How many GPUs this node declared to Ray."""
    import ray

    here = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node.get("NodeID") == here:
            return int((node.get("Resources") or {}).get("GPU", 0))
    return 0
