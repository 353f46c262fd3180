"""The `ray` runtime, control-plane side: containers placed on the nodes of a Ray cluster.

The server connects to the cluster as a Ray driver (`ray.init(address=FERRY_RAY_ADDRESS)`,
with the operator's `RAY_AUTH_*` settings). Each container holds its resource request in a
"slot" (slots.py): a placement group of one bundle run by its node's agent (node_agent.py, one
actor per node), or, for a GPU container, an actor of its own (agent.py); Ray decides the
node. Ferry keeps no membership of its own: a node that dies takes its actors with it, and the
awaited actor call raises, which ends the container as `ExitStatus(node_lost=True)` (its
inputs are then retried elsewhere, see containers.py).

    start()  create the slot (returns at once; Ray may still be looking for a node)
    wait()   the slot placed -> the image's files the node lacks (agent.missing_blobs ->
             agent.put_blobs, from the blob store) -> agent.start (image built or found on the
             node, process started) -> agent.wait, forwarding raw output -> the slot released
    build_image()  an app's image made ready on the nodes when the app starts (prebuild.py): a
             venv built on process nodes, its layers fetched by sandbox nodes
    terminate / kill   SIGTERM / SIGKILL to the container's process group through the actor;
                       a slot not yet placed is simply released
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from typing import Any, Callable

from .... import _config
from .... import exception as ferry_errors
from ....exception import InvalidError
from ...images.venv_recipe import check_recipe
from ..base import ContainerHandle, ContainerSpec, ExitStatus, OutputSink, Runtime
from .gpus import REFRESH_SECONDS, ClusterGPUs
from .node_layers import SandboxImages
from .slots import PLACEMENT_STRATEGY, ActorSlot, NodeAgents, NodeSlot, Stopped
from .prebuild import NodeBuilds, eligible_nodes, send_image_files

log = logging.getLogger("ferry.server")

MIB = 1024 * 1024
DEFAULT_CPU = 0.25        # num_cpus of a container that does not ask for cpu=
CONNECT_TIMEOUT = 5.0     # seconds to reach the cluster's address before ray.init
KILL_GRACE = 5.0          # after SIGKILL through the agent, the actor itself is killed
UNAVAILABLE_GRACE = 30.0  # seconds an actor may be unreachable (not dead) before it counts as lost


def parse_address(address: str) -> tuple[str, int]:
    """`HOST:PORT` of a Ray cluster's head (its GCS), or an InvalidError saying what to set."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidError(
            f"FERRY_RAY_ADDRESS={address!r} is not HOST:PORT: set it (or --ray-address) to the address "
            "`ray start --head` printed, e.g. 10.0.0.5:6379."
        )
    return host.strip("[]"), int(port)


def _causes(exc: BaseException) -> str:
    """The first line of `exc` and of each exception that caused it, with a hint when the
    cluster refused the connection's token."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(parts) < 4:
        line = (str(seen).strip().splitlines() or [type(seen).__name__])[0]
        line = line.replace("Traceback (most recent call last):", "").strip(" :.")
        if line and line not in parts:
            parts.append(line)
        seen = seen.__cause__ or seen.__context__
    text = "; ".join(parts)
    if "auth" in text.lower() or os.environ.get("RAY_AUTH_MODE") == "token":
        text += (" (with RAY_AUTH_MODE=token the cluster refuses a missing or wrong token: give the server "
                 "the cluster's token in RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH)")
    return text


class RayRuntime(Runtime):
    """Containers as Ray actors on the cluster at `address` (see the module docstring)."""

    name = "ray"

    def __init__(self, address: str) -> None:
        if not address:
            raise InvalidError(
                "FERRY_RUNTIME=ray needs the address of a Ray cluster: set FERRY_RAY_ADDRESS=HOST:PORT "
                "(or `ferry server --ray-address HOST:PORT`), the address `ray start --head` printed."
            )
        self.address = address
        self._host, self._port = parse_address(address)
        self.tls_fingerprint: str | None = None  # set by the server when it serves TLS
        self.read_blob: Callable[[str], bytes] | None = None  # set by the server: its blob store's get
        self.build_timeout = 3600.0  # set by the server: FERRY_IMAGE_BUILD_TIMEOUT, per step
        # set by the server unless FERRY_NODE_RUNTIME=process: sandbox nodes' layers (node_layers.py)
        self.sandboxes: SandboxImages | None = None
        self.gpus = ClusterGPUs(self._nodes)
        self._agent: Any = None
        self._node_agents = NodeAgents()
        self._node_builds: NodeBuilds | None = None  # images built ahead on nodes (prebuild.py)
        self._node_capacities: list[tuple[float, int]] = []
        self._capacities_at = float("-inf")

    # -- the cluster ------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect to the cluster; a bad address or an unreachable cluster raises InvalidError."""
        try:
            socket.create_connection((self._host, self._port), timeout=CONNECT_TIMEOUT).close()
        except OSError as exc:
            raise InvalidError(
                f"Cannot reach the Ray cluster at {self.address} (FERRY_RAY_ADDRESS): {exc.strerror or exc}. "
                "Start it with `ray start --head`, or fix the address."
            ) from None
        try:
            await asyncio.to_thread(self._connect)
        except ImportError:
            raise InvalidError("FERRY_RUNTIME=ray needs Ray on the server: pip install 'ferry[ray]'.") from None
        except Exception as exc:  # noqa: BLE001 - Ray's errors vary; the cause is reported in one line
            raise InvalidError(f"Cannot connect to the Ray cluster at {self.address}: {_causes(exc)}") from None

    def _connect(self) -> None:
        # Ray's C++ client repeats each failed attempt on stderr; the failure is reported once
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")
        import ray

        from .agent import ContainerAgent

        if not ray.is_initialized():
            ray.init(address=f"{self._host}:{self._port}", namespace="ferry", log_to_driver=False,
                     logging_level=logging.WARNING, configure_logging=False)
        self._agent = ray.remote(ContainerAgent)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        log.warning("connected to the Ray cluster at %s (%d nodes)", self.address, len(nodes))

    def _nodes(self) -> list[dict[str, Any]]:
        import ray

        return ray.nodes() if ray.is_initialized() else []

    async def close(self) -> None:
        if self._agent is not None:
            import ray

            await asyncio.to_thread(ray.shutdown)
            self._agent = None

    def unmeetable(self, cpu: float | None, memory_mb: int | None) -> str | None:
        """Why no alive node has the CPUs and memory a container asks for, naming the nodes'
        sizes (None when one has, or before the cluster has answered)."""
        need_cpu = cpu if cpu is not None else DEFAULT_CPU
        need_memory = (memory_mb or 0) * MIB
        nodes = self._capacities()
        if not nodes or any(c >= need_cpu and m >= need_memory for c, m in nodes):
            return None
        sizes = ", ".join(f"{c:g} CPUs and {m // MIB:,} MiB" for c, m in sorted(nodes, reverse=True)[:5])
        asked = f"{need_cpu:g} CPUs" + (f" and {memory_mb:,} MiB of memory" if memory_mb else "")
        return (f"no node of the Ray cluster has {asked} (its nodes: {sizes}). Lower cpu=/memory=, or "
                "add a node that large: calls fail until one joins.")

    def _capacities(self) -> list[tuple[float, int]]:
        """(CPUs, memory bytes) of each alive node, read at most every REFRESH_SECONDS."""
        if time.monotonic() - self._capacities_at > REFRESH_SECONDS:
            try:
                self._node_capacities = [
                    (float((n.get("Resources") or {}).get("CPU", 0)), int((n.get("Resources") or {}).get("memory", 0)))
                    for n in self._nodes() if n.get("Alive")]
            except Exception:  # noqa: BLE001 - the last answer stands while the GCS is unreachable
                pass
            self._capacities_at = time.monotonic()
        return self._node_capacities

    # -- what it can run ------------------------------------------------------------------
    def check(self, spec: ContainerSpec) -> None:
        if spec.block_network and _config.get("node_runtime") != "sandbox":
            raise InvalidError("block_network=True needs sandboxes; the ray runtime runs containers as plain "
                               "processes on nodes that cannot run sandboxes. Set FERRY_NODE_RUNTIME=sandbox "
                               "on the server (docs/cluster.md), or remove block_network=True.")

    def check_function(self, tag: str, definition: dict[str, Any]) -> None:
        """The process runtime's refusals (nodes build images as it does), except that
        add_local_dir/add_local_file are bound at their paths on the node."""
        # (with_options(image=...) brings its image in the config it overrides; a FastAPI endpoint
        # of the bare image runs, as in the process runtime, on Ferry's own Python, which has it)
        image = (definition.get("image_for_process_runtime") or definition.get("image")
                 or (definition.get("config") or {}).get("image"))
        if image and image.get("steps") and _config.get("node_runtime") == "process":  # (sandbox nodes run them)
            try:
                check_recipe(image, mounts_at_paths=True)
            except InvalidError as exc:
                raise InvalidError(f"{tag}: {exc}") from None

    # -- images ---------------------------------------------------------------------------
    async def build_image(self, recipe: dict[str, Any], configs: list[dict[str, Any]] | None,
                          emit: Callable[[dict[str, Any]], None] | None) -> list[str]:
        """Make the image's node `recipe` ready on every alive node that could host one of
        `configs` (functions' configs; None: every node), in parallel, ahead of its containers
        (prebuild.py): process nodes build its venv, sandbox nodes fetch its layers (built here
        first). Raises a failed step's error; returns warnings for nodes left out."""
        if self._agent is None or self.read_blob is None:
            raise InvalidError("The ray runtime is not connected to its cluster (the server is starting "
                               "or stopping).")
        if self.sandboxes is not None and (configs is None or any(not c.get("gpu") for c in configs)):
            await self.sandboxes.manifest(recipe, emit)  # for sandbox nodes, built here (a failed step fails it)
        nodes = eligible_nodes(await asyncio.to_thread(self._nodes), configs)
        if self._node_builds is None:
            self._node_builds = NodeBuilds(self.read_blob, self.build_timeout, self.sandboxes,
                                           _config.get("node_runtime"))
        return await self._node_builds.run(recipe, nodes, emit)

    # -- containers -----------------------------------------------------------------------
    def _options(self, spec: ContainerSpec) -> dict[str, Any]:
        options: dict[str, Any] = {
            "num_cpus": spec.cpu if spec.cpu is not None else DEFAULT_CPU,
            "max_restarts": 0,
            "scheduling_strategy": "SPREAD",
            "name": spec.container_id,
        }
        if spec.memory_mb is not None:
            options["memory"] = spec.memory_mb * 1024 * 1024
        if spec.gpu_type is not None:
            options["num_gpus"] = len(spec.gpu_indices)  # slots: Ray picks the devices
            resource = self.gpus.ray_resource(spec.gpu_type)
            if resource is not None:
                options["resources"] = {resource: 0.001}
        return options

    def _bundle(self, spec: ContainerSpec) -> dict[str, float]:
        """The placement group bundle of a container without a GPU: its CPUs and memory."""
        bundle: dict[str, float] = {"CPU": spec.cpu if spec.cpu is not None else DEFAULT_CPU}
        if spec.memory_mb is not None:
            bundle["memory"] = spec.memory_mb * MIB
        return bundle

    async def start(self, spec: ContainerSpec, on_output: OutputSink) -> ContainerHandle:
        self.check(spec)
        if self._agent is None:
            raise InvalidError("The ray runtime is not connected to its cluster (the server is starting "
                               "or stopping).")
        image = spec.image
        if image is not None and image.node_recipe is None:
            raise InvalidError("The ray runtime runs only images its nodes build (the server's image "
                               "service gave it an image built on the control plane).")
        launch = {
            "container_id": spec.container_id,
            "function_id": spec.function_id,
            "server_url": spec.server_url,
            "tls_fingerprint": self.tls_fingerprint,
            "env": dict(spec.env),
            "image": image.node_recipe if image is not None else None,  # built by the node's agent
            "build_timeout": self.build_timeout,
            "gpu_type": spec.gpu_type,
            "volumes": [dict(v) for v in spec.volumes],
            "cpu": spec.cpu, "memory_mb": spec.memory_mb,  # enforced with a cgroup where the node can
            "node_runtime": _config.get("node_runtime"), "block_network": spec.block_network,
            "entry_module": spec.entry_module,  # a function's entrypoint, or a Sandbox's supervisor
        }
        if spec.gpu_type is not None:  # Ray gives GPU devices to a worker: an actor of its own
            slot: ActorSlot | NodeSlot = ActorSlot(self._agent.options(**self._options(spec)).remote())
        else:
            from ray.util.placement_group import placement_group

            group = placement_group([self._bundle(spec)], strategy=PLACEMENT_STRATEGY, name=spec.container_id)
            slot = NodeSlot(group, spec.container_id, self._node_agents)
        return RayHandle(slot, launch, on_output, self.read_blob, self.sandboxes)


class RayHandle(ContainerHandle):
    """A container held by its slot (slots.py). `node_id` is Ray's id of its node, once placed."""

    def __init__(self, slot: ActorSlot | NodeSlot, launch: dict[str, Any], on_output: OutputSink,
                 read_blob: Callable[[str], bytes] | None = None, sandboxes: SandboxImages | None = None) -> None:
        self._sandboxes = sandboxes
        self._slot = slot
        self._actor: Any = None  # what runs it: its own actor, or its node's agent (slots.OnNode)
        self._launch = launch
        self._read_blob = read_blob
        self._on_output = on_output
        self.node_id: str | None = None
        self._started = False
        self._stopping: int | None = None  # the signal we sent, if any
        self._done = False

    async def wait(self) -> ExitStatus:
        import ray.exceptions

        try:
            try:
                self._actor = await self._slot.place()
                if not await self._choose_node_runtime():
                    return ExitStatus(code=None)
                await self._send_image_files()
                placed = await self._actor.start.remote(self._launch)
            except Stopped:  # stopped while Ray was placing it
                return ExitStatus(code=-(self._stopping or signal.SIGKILL))
            except ray.exceptions.RayTaskError as exc:  # no image, or the agent could not start the process
                if self._stopping is not None:  # released while it started
                    return ExitStatus(code=-self._stopping)
                self._on_output("stderr", f"ferry: {exc.cause if exc.cause else exc}\n")
                return ExitStatus(code=None)
            except (OSError, ferry_errors.Error) as exc:  # an image file missing from the blob store
                self._on_output("stderr", f"ferry: could not send the image's files to the node: {exc}\n")
                return ExitStatus(code=None)
            self.node_id = placed["node_id"]
            self._started = True
            if self._stopping is not None:  # asked to stop while Ray was placing it
                self._signal(self._stopping)
            pump = asyncio.create_task(self._pump())
            try:
                result = await self._wait_for_exit()
            finally:
                self._done = True
                await asyncio.gather(pump, return_exceptions=True)
            return ExitStatus(code=result["code"], oom_killed=bool(result.get("oom_killed")),
                              memory_mb=result.get("memory_mb"))
        except ray.exceptions.RayActorError as exc:
            self._slot.lost()
            if self._stopping is not None:  # we killed it ourselves
                return ExitStatus(code=-self._stopping)
            if exc.actor_init_failed:  # e.g. Ferry is not installed on the node: a start failure
                first = (str(exc).strip().splitlines() or ["its agent could not start"])[-1]
                self._on_output("stderr", f"ferry: the container's agent failed on its node: {first}\n")
                return ExitStatus(code=None)
            where = f"node {self.node_id}" if self.node_id else "its node"
            reason = (str(exc).strip().splitlines() or ["the actor died"])[0]
            log.warning("container %s lost with %s: %s", self._launch["container_id"], where, reason)
            return ExitStatus(code=None, node_lost=True)
        finally:
            self._done = True
            self._release()

    async def _choose_node_runtime(self) -> bool:
        """On a sandbox node, the launch names the image's layers, sent to the node first
        (node_layers.py); False, the reason in the container's log, where it cannot start."""
        if self._sandboxes is None:
            return True
        try:
            placement = await self._sandboxes.prepare(self._actor, self._launch, self._read_blob)
        except ferry_errors.Error as exc:  # a failed layer build, or an image its node cannot run
            self._on_output("stderr", f"ferry: {exc}\n")
            return False
        self._launch = placement.launch
        if placement.note:
            self._on_output("stderr", placement.note)
        return True

    async def _send_image_files(self) -> None:
        """The image's files the node lacks, from the control plane's blob store to the agent."""
        recipe = self._launch.get("image")
        if recipe and self._read_blob is not None:
            await send_image_files(self._actor, recipe, self._read_blob)

    async def _wait_for_exit(self) -> dict[str, Any]:
        """The agent's `wait`, asked again while Ray says the actor is only unreachable for now
        (ActorUnavailableError); a dead actor raises ActorDiedError."""
        import ray.exceptions

        unavailable_since = None
        while True:
            try:
                return await self._actor.wait.remote()
            except ray.exceptions.ActorUnavailableError:
                unavailable_since = unavailable_since or asyncio.get_running_loop().time()
                if asyncio.get_running_loop().time() - unavailable_since > UNAVAILABLE_GRACE:
                    raise
                await asyncio.sleep(1.0)

    async def _pump(self) -> None:
        """Forward the container's raw output while it runs."""
        while True:
            try:
                chunks = await self._actor.output.remote()
            except Exception:  # noqa: BLE001 - the actor is gone; wait() reports how
                return
            for stream, text in chunks:
                self._on_output(stream, text)
            if self._done:
                return

    def _release(self) -> None:
        """The container has ended: its slot (and the resources Ray holds for it) goes."""
        self._slot.release()

    def _signal(self, sig: int) -> None:
        self._actor.signal.remote(int(sig))

    def terminate(self) -> None:
        self._stop(signal.SIGTERM)

    def kill(self) -> None:
        self._stop(signal.SIGKILL)
        if self._started and self._slot.kill_unanswered:  # an agent that does not answer goes with its container
            asyncio.get_running_loop().call_later(KILL_GRACE, self._kill_actor)

    def _stop(self, sig: int) -> None:
        if self._done:
            return
        self._stopping = sig
        if self._started:
            self._signal(sig)
        else:  # not started yet: the slot goes (a start under way on its node is undone)
            self._release()

    def _kill_actor(self) -> None:
        if not self._done:
            self._release()
