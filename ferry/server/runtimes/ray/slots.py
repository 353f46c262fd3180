"""Where a container's resources are held on the Ray cluster, and which agent runs it (the
control plane's side; runtime.py's RayHandle uses one slot per container):

    NodeSlot   a container without a GPU: a placement group of one bundle (its CPU and memory),
               which Ray accounts and places like an actor; the agent of the bundle's node
               (node_agent.py, one per node, created on first need) runs the container
    ActorSlot  a container with a GPU: an actor of its own (agent.py) created with the
               container's resources, since Ray assigns GPU devices only to a worker process

Either way `place()` waits for Ray and returns an object called as an actor of the container's
own (`agent.start.remote(launch)`), and `release()` frees the resources once it has ended.
"""

from __future__ import annotations

import asyncio
from typing import Any

PLACEMENT_STRATEGY = "SPREAD"


class Stopped(Exception):
    """The container was stopped before Ray placed it."""


class ActorSlot:
    """A container's own actor (a ContainerAgent), created with its resources."""

    kill_unanswered = True  # an agent that does not answer a SIGKILL goes with its container

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    async def place(self) -> Any:
        return self.actor

    def release(self) -> None:
        """The actor goes, and Ray frees its resources (an actor not yet placed is cancelled)."""
        import ray

        try:
            ray.kill(self.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def lost(self) -> None:
        """Its actor died (the actor itself is gone: nothing to forget)."""


class _Method:
    def __init__(self, agent: Any, container_id: str, name: str) -> None:
        self._agent, self._container_id, self._name = agent, container_id, name

    def remote(self, *args: Any) -> Any:
        return self._agent.call.remote(self._container_id, self._name, *args)


class OnNode:
    """One container's calls to its node's agent, shaped as calls to an actor of its own:
    `on_node.start.remote(launch)` is `agent.call.remote(container_id, "start", launch)`."""

    def __init__(self, agent: Any, container_id: str) -> None:
        self.agent = agent
        self.container_id = container_id

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Method(self.agent, self.container_id, name)


class NodeAgents:
    """The control plane's node agents, one per node, each created when a container is first
    placed on its node (no resources of its own; pinned to the node; it dies with this driver)."""

    def __init__(self) -> None:
        self._agents: dict[str, Any] = {}
        self._class: Any = None

    def on(self, node_id: str) -> Any:
        agent = self._agents.get(node_id)
        if agent is None:
            import ray
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            from .node_agent import NodeAgent

            self._class = self._class or ray.remote(NodeAgent)
            agent = self._class.options(
                num_cpus=0, max_restarts=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)).remote()
            self._agents[node_id] = agent
        return agent

    def lost(self, node_id: str, agent: Any) -> None:
        """`agent` died (with its node, or alone): the next container on the node gets a new one."""
        if self._agents.get(node_id) is agent:
            del self._agents[node_id]

    def __len__(self) -> int:
        return len(self._agents)


class NodeSlot:
    """A container's placement group of one bundle; its node's agent runs it."""

    kill_unanswered = False  # the node's agent holds other containers: it is never killed for one

    def __init__(self, placement_group: Any, container_id: str, agents: NodeAgents) -> None:
        self._group = placement_group
        self._container_id = container_id
        self._agents = agents
        self._agent: Any = None
        self.node_id: str | None = None
        self._released = asyncio.Event()

    async def place(self) -> OnNode:
        """Wait for Ray to reserve the bundle; the node's agent (raises Stopped if released first)."""
        from ray.util.placement_group import placement_group_table

        async def ready() -> Any:
            return await self._group.ready()

        placed = asyncio.ensure_future(ready())
        released = asyncio.ensure_future(self._released.wait())
        try:
            await asyncio.wait({placed, released}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (placed, released):
                task.cancel()
        if self._released.is_set():
            raise Stopped()
        placed.result()
        table = await asyncio.to_thread(placement_group_table, self._group)
        if self._released.is_set():
            raise Stopped()
        self.node_id = table["bundles_to_node_id"][0]
        self._agent = self._agents.on(self.node_id)
        return OnNode(self._agent, self._container_id)

    def release(self) -> None:
        """The bundle goes (Ray frees its resources); the node's agent forgets the container."""
        from ray.util.placement_group import remove_placement_group

        if self._released.is_set():
            return
        self._released.set()
        try:
            remove_placement_group(self._group)
        except Exception:  # noqa: BLE001 - already gone (with the driver's job)
            pass
        if self._agent is not None:
            self._agent.release.remote(self._container_id)

    def lost(self) -> None:
        if self._agent is not None and self.node_id is not None:
            self._agents.lost(self.node_id, self._agent)
