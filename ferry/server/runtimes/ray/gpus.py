"""The GPU inventory of a Ray cluster, as the control plane's GPU allocator sees it.

In ray mode the cluster's nodes hold the GPUs: each node advertises `GPU: n` and, for its GPU
model, an `accelerator_type:<T>` resource (Ray's own convention; `ray start --num-gpus 1
--resources '{"accelerator_type:T4": 1}'`). Ray places each container on a node and picks its
devices; this allocator only counts, per GPU type, how many GPUs Ferry's containers hold, so
that the autoscaler waits (and reclaims idle GPU containers) when the cluster's GPUs of a type
are all taken, and so that a request no node has ever met since the server started fails
fast (one whose nodes have gone waits for such a node to join). The "indices" it hands out
are slot numbers, not device indices (`ContainerSpec.gpu_indices` has one per GPU).

The inventory is read from `ray.nodes()` when asked, at most every REFRESH_SECONDS: a node
that joins with a GPU makes requests for it placeable again.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from ...._gpu import GPURequest, canonical_type

REFRESH_SECONDS = 2.0
ACCELERATOR_PREFIX = "accelerator_type:"
# Ray's names for GPU models that Ferry spells differently
_RAY_TO_FERRY = {"A100-40G": "A100-40GB", "A100-80G": "A100-80GB"}


def ferry_type(ray_name: str) -> str:
    """Ferry's name of a GPU model Ray calls `ray_name` (unknown models keep their name)."""
    name = _RAY_TO_FERRY.get(ray_name, ray_name)
    return canonical_type(name) or name


@dataclass(frozen=True)
class NodeGPUs:
    node_id: str
    gpu_type: str        # Ferry's name; "GPU" when the node does not say which model
    ray_name: str | None  # its accelerator_type resource's name, if any
    count: int


def read_nodes(nodes: list[dict[str, Any]]) -> list[NodeGPUs]:
    """The GPUs of the alive nodes in a `ray.nodes()` answer."""
    found = []
    for node in nodes:
        if not node.get("Alive"):
            continue
        resources = node.get("Resources") or {}
        count = int(resources.get("GPU", 0))
        if count <= 0:
            continue
        names = [key[len(ACCELERATOR_PREFIX):] for key in resources if key.startswith(ACCELERATOR_PREFIX)]
        ray_name = names[0] if names else None
        found.append(NodeGPUs(node["NodeID"], ferry_type(ray_name) if ray_name else "GPU", ray_name, count))
    return found


class ClusterGPUs:
    """The GPUAllocator interface (allocate, release, satisfiable, describe) over a Ray cluster."""

    def __init__(self, nodes: Callable[[], list[dict[str, Any]]]) -> None:
        self._read = nodes
        self._nodes: list[NodeGPUs] = []
        self._read_at = float("-inf")
        self._held: dict[int, str] = {}  # slot -> GPU type
        self._slots = itertools.count()
        self._seen: dict[str, NodeGPUs] = {}  # every GPU node alive at some read, by node id

    def nodes(self) -> list[NodeGPUs]:
        if time.monotonic() - self._read_at > REFRESH_SECONDS:
            try:
                self._nodes = read_nodes(self._read())
                self._seen.update((node.node_id, node) for node in self._nodes)
            except Exception:  # noqa: BLE001 - the last answer stands while the GCS is unreachable
                pass
            self._read_at = time.monotonic()
        return self._nodes

    def ray_resource(self, gpu_type: str) -> str | None:
        """The `accelerator_type:<T>` resource of the nodes with GPUs of `gpu_type`."""
        for node in self.nodes():
            if node.gpu_type == gpu_type and node.ray_name:
                return ACCELERATOR_PREFIX + node.ray_name
        return None

    def _totals(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for node in self.nodes():
            totals[node.gpu_type] = totals.get(node.gpu_type, 0) + node.count
        return totals

    def _largest(self, gpu_type: str) -> int:
        return max((n.count for n in self.nodes() if n.gpu_type == gpu_type), default=0)

    def allocate(self, request: GPURequest) -> tuple[str, list[int]] | None:
        """Count GPUs of the first option the cluster can serve now; Ray picks the node."""
        totals = self._totals()
        for option in request.options:
            for gpu_type, total in totals.items():
                if not option.matches(gpu_type) or self._largest(gpu_type) < option.count:
                    continue
                used = sum(1 for held in self._held.values() if held == gpu_type)
                if total - used >= option.count:
                    slots = [next(self._slots) for _ in range(option.count)]
                    self._held.update((slot, gpu_type) for slot in slots)
                    return gpu_type, slots
        return None

    def release(self, indices: Iterable[int]) -> None:
        for slot in indices:
            self._held.pop(slot, None)

    def satisfiable(self, request: GPURequest) -> bool:
        """Whether some node could serve some option: one alive now, or one that was and has
        gone (its GPU's inputs wait for such a node to join again, rather than fail)."""
        self.nodes()
        return any(option.matches(node.gpu_type) and node.count >= option.count
                   for option in request.options for node in self._seen.values())

    def describe(self) -> str:
        totals = self._totals()
        if not totals:
            return "no GPUs on the Ray cluster's nodes"
        parts = []
        for gpu_type, total in totals.items():
            used = sum(1 for held in self._held.values() if held == gpu_type)
            parts.append(f"{total}x {gpu_type} ({total - used} free)")
        return ", ".join(parts) + " on the Ray cluster's nodes"
