"""The node side of the `ray` runtime for containers that ask for no GPU: one `NodeAgent` actor
per node runs all of them.

A Ray actor is a Ray worker process of its own: creating one per container cost each start a
new worker (0.5-0.7 s of a 1 s start on a quiet 2-core node, seconds in a burst, where the
workers' starts queue for the node's CPUs). Instead the control plane holds a container's
resources with a placement group of one bundle (cpu=, memory=; Ray accounts them and picks
the node, runtime.py) and asks that node's agent, created once per node with no resources of
its own, to run the container:

    control plane                                     node agent (this module)
      placement_group([{CPU, memory}]) -> node  ─►      call(id, "missing_blobs" | "put_blobs" |
      call(id, method, *args)                             "start" | "output" | "wait" | "signal")
      release(id) once the container has ended  ─►      a ContainerAgent object per container
      (and its placement group removed)                  (agent.py: the start recipe, output,
                                                          signals, exit status, cgroup)

A container never outlives its node agent (PR_SET_PDEATHSIG=SIGKILL, agent.py), and the agent
dies with the control plane's driver or its node; a released container's process is killed.
A container with a GPU still gets an actor of its own (agent.py): Ray assigns GPU devices only
to a worker process.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from .agent import ContainerAgent

RELEASED_KEPT = 4096  # ids remembered as released (a late call for one fails)


class NodeAgent:
    """The Ray actor that runs the GPU-less containers of one node (see the module docstring)."""

    def __init__(self) -> None:
        self._containers: dict[str, ContainerAgent] = {}
        self._waiting: set[str] = set()       # containers whose `wait` is being called
        self._released: dict[str, None] = {}  # the last RELEASED_KEPT released ids, oldest first
        self._cleanups: set[asyncio.Task] = set()

    async def call(self, container_id: str, method: str, *args: Any) -> Any:
        """`method(*args)` of the container's ContainerAgent (made on its first call)."""
        if container_id in self._released:
            raise RuntimeError(f"container {container_id} was released on this node")
        agent = self._containers.setdefault(container_id, ContainerAgent())
        if method == "wait":
            self._waiting.add(container_id)
        try:
            result = await getattr(agent, method)(*args)
        finally:
            if method == "wait":
                self._waiting.discard(container_id)
        if method == "start" and container_id in self._released:  # released while it started
            await self._end(container_id, agent)
            raise RuntimeError(f"container {container_id} was released on this node while it started")
        return result

    async def release(self, container_id: str) -> None:
        """Forget the container (its placement group is gone): a process still running is
        killed and cleaned up, and later calls for it fail."""
        self._released[container_id] = None
        while len(self._released) > RELEASED_KEPT:
            del self._released[next(iter(self._released))]
        agent = self._containers.pop(container_id, None)
        if agent is not None:
            await self._end(container_id, agent)

    async def _end(self, container_id: str, agent: ContainerAgent) -> None:
        await agent.signal(int(signal.SIGKILL))
        if container_id in self._waiting or agent._exited.is_set():
            return  # its `wait` cleans up
        if agent._process is not None:  # its `wait` was never called: it cleans up (cgroup, volume views)
            task = asyncio.create_task(agent.wait())
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)
        elif getattr(agent, "_pin", None) is not None:  # never started: the cache entries it pinned
            await asyncio.to_thread(agent._pin.release)

    async def containers(self) -> list[str]:
        """Ids of the containers this agent holds now."""
        return sorted(self._containers)
