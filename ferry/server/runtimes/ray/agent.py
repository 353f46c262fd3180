"""The node side of the `ray` runtime: a `ContainerAgent` holds one container, as an actor of
its own for a container with a GPU, else as an object in its node's agent (node_agent.py, which
also forks such containers from a zygote: `fork`).

Ray places the actor (or the container's placement group) on a node that has the container's
resources (CPU, memory, GPUs); the agent then starts the container there with the process runtime's recipe (`python -m
ferry._container` of the node's own Python, Ferry installed), forwards its raw output,
signals it on request and reports how it ended. Nothing here reads the control plane's
files: the container fetches its code (and volume chunks) over its own connection, into the
node's cache directory (`FERRY_NODE_CACHE`); the image's files come with the start
(`missing_blobs`, `put_blobs`), and the agent builds the image's venv in that cache before it
starts the container (node_images.py).

    actor created (Ray placed it) --missing_blobs/put_blobs--> --start (image built or found)-->
        container running --wait--> ExitStatus fields
                                              \\-- signal(SIGTERM / SIGKILL) from the server

The agent pins the cache entries its container uses (node_cache.py: its venv or its sandbox's
layers, its image's files) until the container has ended, and keeps the node's cache under
FERRY_NODE_CACHE_MAX_GB when the container has started and when it has ended (least recently
used entries go, never pinned ones; writable layers of sandboxes whose agent is gone go too).

A container never outlives its agent: it is started with PR_SET_PDEATHSIG=SIGKILL (one forked
from a node agent's zygote gets it from the zygote, which has it from the agent), so when the
actor's worker process dies (ray.kill, the node lost, the control plane's driver gone), the
kernel kills the container too.

This module is imported on the nodes (by Ray, to run the actor): it imports nothing of the
control plane beyond `volume_mounts`, `base` and the image builder's node-safe modules
(node_images.py), which import no server state.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

from ..base import gpu_environment
from .node_layers import LayerReceiver

PR_SET_PDEATHSIG = 1
OUTPUT_WAIT_SECONDS = 1.0
# what the container must not inherit from the node's Ray worker: Ray's own credentials and
# settings are the cluster's, not user code's
_HIDDEN_PREFIXES = ("RAY_AUTH_TOKEN", "RAY_ADDRESS", "FERRY_TOKEN_", "FERRY_SERVER_URL", "FERRY_PROFILE",
                    "FERRY_CONFIG_PATH", "FERRY_TLS_")


def node_cache_dir() -> Path:
    """The node's cache: `FERRY_NODE_CACHE`, else `<temp dir>/ferry-node-<uid>`."""
    from .... import _config

    path: Path = _config.get("node_cache")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _ray_gpu_ids() -> list[str]:
    """Ray's ids of the GPUs it placed on this actor (indices, unless the node's
    CUDA_VISIBLE_DEVICES named them otherwise when `ray start` ran)."""
    import ray

    return [str(i) for i in ray.get_gpu_ids()]


def _die_with_parent(prctl: Any, parent: int) -> Any:
    """What the child runs before exec: SIGKILL when the agent's thread that started it ends.
    `prctl` is resolved in the agent, before the fork: the child of a threaded process only
    calls it (no dlopen, no lock another thread might have held)."""

    def run() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the agent is already gone
            os._exit(137)

    return run


class ContainerAgent(LayerReceiver):
    """The Ray actor that holds one container on its node (see the module docstring); on a
    sandbox node it receives its image's layers first (`missing_layers`, `put_layer`)."""

    # set by a node agent (node_agent.py): `fork(python, env, cwd, cgroup)` forks the container
    # from the node's zygote of its interpreter, or returns None (then it starts the plain way)
    fork: Any = None
    # set by a node agent: its spare sandboxes (node_spares.NodeSpares), or None
    spares: Any = None

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None
        self._output: list[tuple[str, str]] = []
        self._has_output = asyncio.Event()
        self._readers: list[asyncio.Task] = []
        self._cleanup: Any = None
        self._cgroup: Any = None  # the container's cgroup, when cpu=/memory= are enforced here
        self._memory_mb: int | None = None
        self._exited: asyncio.Event = asyncio.Event()
        self._pin: Any = None  # the node cache's entries this container uses (node_cache.Pin)
        self._sandboxed = False  # in a sandbox over its image's layers (node_sandbox.py)

    def _node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    async def missing_blobs(self, recipe: dict[str, Any]) -> list[str]:
        """Digests of the image's files this node needs and lacks (node_images.py); the image's
        cache entries are pinned from now until the container has ended."""
        from .node_cache import Pin
        from .node_images import NodeImages

        self._pin = self._pin or Pin(node_cache_dir())
        return await asyncio.to_thread(NodeImages(node_cache_dir()).missing, recipe, self._pin)

    async def put_blobs(self, blobs: dict[str, bytes]) -> None:
        """Keep image files the control plane sent (checked against their digests)."""
        from .node_images import NodeImages

        await asyncio.to_thread(NodeImages(node_cache_dir()).put, blobs)

    async def node_runtime(self, setting: str, gpu: bool) -> dict[str, Any]:
        """Which runtime this node gives the container (holding the GPUs Ray placed on this
        actor, where `gpu`) under FERRY_NODE_RUNTIME=`setting` (node_sandbox.py): {runtime,
        why, node_id}."""
        from .node_sandbox import node_runtime

        return {**node_runtime(setting, _ray_gpu_ids() if gpu else None), "node_id": self._node_id()}

    async def start(self, launch: dict[str, Any]) -> dict[str, Any]:
        """Build (or find) the container's image on this node and start the container; return
        where it runs (`node_id`, `pid`) and its image (`image`: key, built, python)."""
        from ...volume_mounts import PreparedVolumes, prepare_process
        from .node_images import NodeImages

        cache = node_cache_dir()
        node_id = self._node_id()
        if launch.get("sandbox") is not None:  # in a sandbox over the image's layers (node_sandbox.py)
            return await self._start_sandbox(launch, cache, node_id)
        env = {k: v for k, v in os.environ.items() if not k.startswith(_HIDDEN_PREFIXES)}
        image = None
        if launch.get("image"):  # a failed build raises the build's error (the step, its output's tail)
            image = await asyncio.to_thread(NodeImages(cache).prepare, launch["image"], launch["build_timeout"],
                                            f"node {node_id}")
            env.update(image.env)
            if image.pythonpath:
                env["PYTHONPATH"] = os.pathsep.join([*image.pythonpath, *filter(None, [env.get("PYTHONPATH")])])
        env.update(launch["env"])
        env.update({
            "FERRY_SERVER_URL": launch["server_url"],
            "FERRY_CONTAINER_ID": launch["container_id"],
            "FERRY_FUNCTION_ID": launch["function_id"],
            "FERRY_NODE_ID": node_id,
            "FERRY_HOME": str(cache / "home"),  # the code mount is cached here, per node
            "PYTHONUNBUFFERED": "1",
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        })
        if launch.get("tls_fingerprint"):
            env["FERRY_TLS_FINGERPRINT"] = launch["tls_fingerprint"]
        if launch.get("gpu_type"):  # the devices Ray placed on this actor
            env.update(gpu_environment(_ray_gpu_ids(), launch["gpu_type"]))
        else:
            env.pop("CUDA_VISIBLE_DEVICES", None)
        module = launch.get("entry_module") or "ferry._container"  # (a Sandbox's: its supervisor)
        argv = [image.python if image is not None else sys.executable, "-m", module]
        volumes = None
        if launch.get("volumes"):  # node-local views, bound in a private mount namespace
            volumes = prepare_process(tuple(launch["volumes"]), launch["container_id"], home=cache / "home")
            env.update(volumes.env)
            self._cleanup = volumes.remove
        if image is not None and image.binds:  # add_local_dir/add_local_file, read-only
            volumes = volumes or PreparedVolumes()
            volumes.binds += image.binds
        if volumes is not None:
            argv = volumes.process_argv(argv)
        argv = self._limited(argv, launch, node_id)
        forked = None
        if self.fork is not None and volumes is None:  # (volumes are bound in a mount namespace of its own)
            forked = await self.fork(image.python if image is not None else sys.executable, env,
                                     image.workdir if image is not None else None, self._cgroup, module)
        try:
            self._process = forked or await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True,
                cwd=image.workdir if image is not None else None,
                preexec_fn=_die_with_parent(ctypes.CDLL(None, use_errno=True).prctl, os.getpid()),
            )
        except OSError as exc:
            if volumes is not None:
                volumes.remove()
            if self._cgroup is not None:
                self._cgroup.destroy()
            raise RuntimeError(f"could not start a container process on node {node_id}: {exc}") from None
        assert self._process.stdout is not None and self._process.stderr is not None
        self._readers = [asyncio.create_task(self._pump(self._process.stdout, "stdout")),
                         asyncio.create_task(self._pump(self._process.stderr, "stderr"))]
        shown = {"key": image.key, "built": image.built, "python": image.python} if image is not None else None
        asyncio.create_task(self._evict())  # the node's cache under its bound (node_cache.py)
        return {"node_id": node_id, "pid": self._process.pid, "image": shown}

    async def _evict(self) -> None:
        """Keep the node's cache under its bound; the files evicted are deleted in the background
        (what an agent killed meanwhile leaves, the next sweep deletes)."""
        from .node_cache import evict, max_bytes, sweep
        from .node_sandbox import remove_leftovers

        try:
            await asyncio.to_thread(remove_leftovers, node_cache_dir() / "sandboxes")  # of containers gone
            if await asyncio.to_thread(evict, node_cache_dir(), max_bytes()):
                asyncio.create_task(asyncio.to_thread(sweep, node_cache_dir()))
        except Exception as exc:  # noqa: BLE001 - a failed eviction must not fail the container
            self._output.append(("stderr", f"ferry: keeping the node's cache under its bound failed: {exc}\n"))

    async def _start_sandbox(self, launch: dict[str, Any], cache: Path, node_id: str) -> dict[str, Any]:
        from .node_sandbox import start_sandbox

        if launch.get("gpu_type"):  # its devices bound in (node_runtime checked that each has its node)
            launch = {**launch, "gpu_indices": [int(i) for i in _ray_gpu_ids()]}
        started = None
        if self.spares is not None and self.spares.can_serve(launch):  # a spare started ahead, if one waits
            started = await self.spares.claim(launch, cache, node_id, self._take_output, self._output.append)
        spare = started is not None
        started = started or await start_sandbox(launch, cache, node_id, self._output.append)
        self._process, self._cgroup, self._cleanup = started.process, started.cgroup, started.cleanup
        self._memory_mb, self._sandboxed = launch.get("memory_mb"), True
        assert self._process.stdout is not None and self._process.stderr is not None
        self._readers = started.readers or [asyncio.create_task(self._pump(self._process.stdout, "stdout")),
                                            asyncio.create_task(self._pump(self._process.stderr, "stderr"))]
        asyncio.create_task(self._evict())  # the node's cache under its bound (node_cache.py)
        return {"node_id": node_id, "pid": self._process.pid, "image": {"key": launch["sandbox"]["key"]},
                "spare": spare}

    def _take_output(self, stream: str, text: str) -> None:
        self._output.append((stream, text))
        self._has_output.set()

    def _limited(self, argv: list[str], launch: dict[str, Any], node_id: str) -> list[str]:
        """`argv` joining a cgroup with the container's cpu=/memory= limits, as the process
        runtime does, where this node can make one; else `argv`, and the container's log says
        that its limits only placed it."""
        from ..cgroups import Cgroup, CgroupLimits, cgroups_unavailable_reason

        cpu, memory_mb = launch.get("cpu"), launch.get("memory_mb")
        if cpu is None and memory_mb is None:
            return argv
        reason = cgroups_unavailable_reason()
        if reason is not None:
            self._output.append(("stderr", f"ferry: cpu=/memory= placed this container on node {node_id} "
                                           f"but are not enforced there: {reason}\n"))
            return argv
        self._cgroup = Cgroup.create(launch["container_id"], CgroupLimits(memory_mb=memory_mb, cpu=cpu))
        self._memory_mb = memory_mb
        joins = " && ".join(f"echo $$ > {shlex.quote(str(p))}" for p in self._cgroup.procs_files)
        return ["/bin/sh", "-c", f'{joins} && exec "$0" "$@"', *argv]

    async def _pump(self, stream: asyncio.StreamReader, name: str) -> None:
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                return
            self._output.append((name, chunk.decode("utf-8", errors="replace")))
            self._has_output.set()

    async def output(self) -> list[tuple[str, str]]:
        """Raw output written since the last call (waits up to a second for some)."""
        if not self._output and not self._exited.is_set():
            try:
                await asyncio.wait_for(self._has_output.wait(), OUTPUT_WAIT_SECONDS)
            except asyncio.TimeoutError:
                pass
        self._has_output.clear()
        taken, self._output = self._output, []
        return taken

    async def wait(self) -> dict[str, Any]:
        """Wait for the container to end: {code}."""
        assert self._process is not None
        code = await self._process.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)
        if self._cleanup is not None:
            await asyncio.to_thread(self._cleanup)
        oom = False
        if self._cgroup is not None:
            oom = self._cgroup.oom_killed()
            self._cgroup.destroy()
        if self._pin is not None:  # its entries were last used now, and may go
            await asyncio.to_thread(self._pin.release)
            await self._evict()
        self._exited.set()
        self._has_output.set()
        return {"code": code, "oom_killed": oom, "memory_mb": self._memory_mb}

    async def signal(self, sig: int) -> None:
        """Signal the container's process group (SIGTERM: it runs @exit; SIGKILL)."""
        process = self._process
        if process is None or process.returncode is not None:
            return
        if sig == signal.SIGTERM and self._sandboxed:  # to its Python: bwrap's init ignores SIGTERM
            from ..sandbox.bwrap import signal_command

            if signal_command(process.pid, sig):
                return
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
