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

Containers are forked from a zygote of their interpreter that the agent keeps (zygote.py, as
the process runtime on one machine): the first container of an interpreter on a node waits for
its zygote to start, the next ones are forked from it at once. A container with volumes or
add_local_dir/add_local_file binds (a mount namespace of its own), or when the zygote cannot
start or FERRY_ZYGOTE=0 on the node, starts as `python -m ferry._container`.

A container never outlives its node agent: the zygote and each container it forks get
PR_SET_PDEATHSIG=SIGKILL (as a container started the plain way does, agent.py), and the agent
dies with the control plane's driver or its node; a released container's process is killed.
A container with a GPU still gets an actor of its own (agent.py): Ray assigns GPU devices only
to a worker process.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import signal
from typing import Any

from .... import _config
from ..process import ForkedProcess, _pipe_reader
from ..zygote import Zygote, ZygoteError, ZygotePool
from ..zygote_process import die_with
from .agent import _HIDDEN_PREFIXES, ContainerAgent, node_cache_dir
from .node_cache import Pin, venv_entry

RELEASED_KEPT = 4096  # ids remembered as released (a late call for one fails)


class NodeZygote(Zygote):
    """A zygote of a node's agent: it dies with the agent, and each container it forks with it.
    While it lives it pins its interpreter's venv in the node's cache (node_cache.py), so no
    eviction removes a venv under a running zygote."""

    def __init__(self, python: str, env: dict[str, str]) -> None:
        super().__init__(python, env)
        self.children_die_with_it = True
        self._pin: Pin | None = None

    async def start(self) -> None:
        root = node_cache_dir()
        entry = venv_entry(root, self.python)
        if entry is not None:  # (pinned before it starts: the venv is gone, or it stays)
            self._pin = Pin(root)
            await asyncio.to_thread(self._pin.add, [entry])
        await super().start()
        if self.state != "ready":
            self._unpin()

    async def stop(self) -> None:
        await super().stop()
        self._unpin()

    def _lost(self) -> None:
        super()._lost()
        self._unpin()

    def _unpin(self) -> None:
        if self._pin is not None:
            self._pin.release()
            self._pin = None

    async def _launch(self, argv: list[str], fd: int, output: Any) -> Any:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before the fork (the agent has threads)
        return await asyncio.create_subprocess_exec(
            *argv, pass_fds=(fd,), stdin=asyncio.subprocess.DEVNULL, stdout=output, env=self.env, cwd=self.cwd,
            start_new_session=True, preexec_fn=functools.partial(die_with, os.getpid(), prctl))


class ForkedContainer(ForkedProcess):
    """A container forked by the node's zygote: what ContainerAgent uses of asyncio's Process."""

    def __init__(self, pid: int, exited: asyncio.Future, stdout: asyncio.StreamReader,
                 stderr: asyncio.StreamReader) -> None:
        super().__init__(pid, exited)
        self.stdout = stdout
        self.stderr = stderr

    async def wait(self) -> int:
        code = await super().wait()
        return -signal.SIGKILL if code is None else code  # None: killed with its zygote


def _inheritable() -> dict[str, str]:
    """What a zygote on this node may inherit (and show in /proc/PID/environ): the node's
    environment without Ray's and Ferry's credentials, as a container started the plain way."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_HIDDEN_PREFIXES)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


class NodeAgent:
    """The Ray actor that runs the GPU-less containers of one node (see the module docstring)."""

    def __init__(self) -> None:
        self._zygotes = ZygotePool(_inheritable, NodeZygote) if _config.get("zygote") else None
        self._containers: dict[str, ContainerAgent] = {}
        self._waiting: set[str] = set()       # containers whose `wait` is being called
        self._released: dict[str, None] = {}  # the last RELEASED_KEPT released ids, oldest first
        self._cleanups: set[asyncio.Task] = set()
        from .node_spares import NodeSpares

        self._spares = NodeSpares(int(_config.get("sandbox_spares")))  # sandbox nodes (node_spares.py)

    async def call(self, container_id: str, method: str, *args: Any) -> Any:
        """`method(*args)` of the container's ContainerAgent (made on its first call)."""
        if container_id in self._released:
            raise RuntimeError(f"container {container_id} was released on this node")
        agent = self._containers.get(container_id)
        if agent is None:
            agent = self._containers[container_id] = ContainerAgent()
            if self._zygotes is not None:
                agent.fork = self._fork
            agent.spares = self._spares
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

    async def _fork(self, python: str, env: dict[str, str], cwd: str | None, cgroup: Any,
                    module: str = "ferry._container") -> ForkedContainer | None:
        """The container (running `module`) forked from the zygote of its interpreter (waiting
        for its start); None where it cannot be."""
        assert self._zygotes is not None
        zygote = await self._zygotes.ready(python, env)
        if zygote is None:
            return None
        try:
            pid, exited, out_fd, err_fd = await zygote.spawn(env, cwd, list(cgroup.procs_files) if cgroup else [],
                                                             module)
        except (ZygoteError, OSError):
            return None
        return ForkedContainer(pid, exited, await _pipe_reader(out_fd), await _pipe_reader(err_fd))

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

    async def spares(self) -> list[dict[str, Any]]:
        """The spare sandboxes waiting on this node: {kind, pid} (node_spares.py)."""
        return self._spares.waiting()

    async def containers(self) -> list[str]:
        """Ids of the containers this agent holds now."""
        return sorted(self._containers)
