"""Building an image on the cluster's nodes ahead of its containers (the ray runtime, control
plane side): when an app starts (`app.create`) or `ferry image build` runs, the image service
(images/builder.py) asks for it, and the first call finds the image ready on every node.

    nodes      every alive node whose resources could host one of the image's functions
               (cpu=, memory=, gpu=; every alive node for `ferry image build`)
    each node  in parallel: a NodeBuilder actor pinned to the node (node_builder.py; no CPU
               held) -> which runtime the node gives containers (FERRY_NODE_RUNTIME, what
               the node has) ->
                 process node: the image's files it lacks, from the blob store -> its venv
                   build, whose progress events are forwarded to the client as the node's own
                   build
                 sandbox node: the image's layers (built on the control plane,
                   node_layers.SandboxImages) and add_local_* files it lacks, sent and
                   unpacked as for a container's start, shown as one step
                   (`fetch image layers on node 1a2b3c4d`); a node that gives GPU-less
                   containers a sandbox and GPU containers a process (no device nodes for its
                   GPUs) does both
    the wait   for every node's build, as on one machine for the local build; a failed step
               fails it with the step's error. A node whose builder does not answer within
               REACH_SECONDS, or that dies while it builds (Ray says so: its health checks),
               is left out with a warning: it builds on its first container, as a node that
               joins later does. So is a process node for an image that needs a root
               filesystem (its containers cannot start there), and a node that cannot run
               sandboxes under FERRY_NODE_RUNTIME=sandbox.

Events keep the local builder's shape (`plan`, `step`, `log`; images/builder.py) with the
step labels naming the node (`pip_install(...) on node 1a2b3c4d`), `image` set to the image
key and the node (so that the client shows each node's build apart), and a failed step's
`log` naming its log file on the node.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any, Callable

from .... import exception as ferry_errors
from ...._gpu import ANY, GPURequest
from .gpus import read_nodes
from .node_images import BLOB_BATCH_BYTES
from .node_layers import SandboxImages, rootfs_step

log = logging.getLogger("ferry.server")
Emit = Callable[[dict[str, Any]], None]

REACH_SECONDS = 120.0     # for a node's builder to be placed and answer its first call
UNAVAILABLE_SECONDS = 30.0  # a builder Ray calls unreachable (not dead) for longer is left out
MIB = 1024 * 1024
DEFAULT_CPU = 0.25        # (runtime.py's, for a function without cpu=)


class NodeLeftOut(Exception):
    """A node that could not build the image now (unreachable, or lost while building)."""


class NodeCannotRun(NodeLeftOut):
    """A node that cannot run the image's containers at all (its warning says why)."""


async def send_image_files(actor: Any, recipe: dict[str, Any], read_blob: Callable[[str], bytes]) -> None:
    """The image's files the node of `actor` (an agent or a builder) lacks, from the control
    plane's blob store, in batches of at most BLOB_BATCH_BYTES."""
    missing = await actor.missing_blobs.remote(recipe)
    batch: dict[str, bytes] = {}
    for digest in missing:
        batch[digest] = await asyncio.to_thread(read_blob, digest)
        if sum(map(len, batch.values())) >= BLOB_BATCH_BYTES:
            await actor.put_blobs.remote(batch)
            batch = {}
    if batch:
        await actor.put_blobs.remote(batch)


def eligible_nodes(nodes: list[dict[str, Any]], configs: list[dict[str, Any]] | None) -> dict[str, set[bool]]:
    """The alive nodes that could host a container of one of `configs` (functions' `config`:
    cpu, memory, gpu), each with whether the configs that fit it ask a GPU (True), none
    (False), or both (GPU containers run as processes on every node); every alive node, for
    GPU-less containers, when `configs` is None."""
    alive = [n for n in nodes if n.get("Alive")]
    if configs is None:
        return {n["NodeID"]: {False} for n in alive}
    gpus = {g.node_id: g for g in read_nodes(alive)}

    def fits(node: dict[str, Any], config: dict[str, Any]) -> bool:
        resources = node.get("Resources") or {}
        cpu = config.get("cpu") if config.get("cpu") is not None else DEFAULT_CPU
        if float(resources.get("CPU", 0)) < cpu or float(resources.get("memory", 0)) < (config.get("memory") or 0) * MIB:
            return False
        if not config.get("gpu"):
            return True
        have = gpus.get(node["NodeID"])
        return have is not None and any(o.count <= have.count and o.type in (ANY, have.gpu_type)
                                        for o in GPURequest.from_dict(config["gpu"]).options)

    kinds = {n["NodeID"]: {bool(c.get("gpu")) for c in configs if fits(n, c)} for n in alive}
    return {node: kind for node, kind in kinds.items() if kind}


@functools.cache
def _builder_class() -> Any:
    import ray

    from .node_builder import NodeBuilder

    return ray.remote(NodeBuilder)


class NodeBuilds:
    """Builds images on the chosen nodes in parallel (see the module docstring), each image
    once per node while the control plane runs: an app started again does not ask the nodes
    again (a node that evicted the image since builds it for its next container)."""

    def __init__(self, read_blob: Callable[[str], bytes], step_timeout: float,
                 sandboxes: SandboxImages | None = None, node_runtime: str = "process") -> None:
        self.read_blob = read_blob
        self.step_timeout = step_timeout
        self.sandboxes = sandboxes  # None: every node runs processes (FERRY_NODE_RUNTIME=process)
        self.node_runtime = node_runtime
        self._built: set[tuple[str, str, str]] = set()  # (image key, build id, node id)

    async def run(self, recipe: dict[str, Any], nodes: dict[str, set[bool]], emit: Emit | None) -> list[str]:
        """Make the recipe ready on every node of `nodes` (eligible_nodes') that has not yet;
        the warnings for nodes left out. Raises the first failed step's error (every node's
        build has ended by then)."""
        done = lambda node: (recipe["key"], recipe.get("build_id") or "", node)  # noqa: E731
        node_ids = [node for node in nodes if done(node) not in self._built]
        results = await asyncio.gather(*(self._on_node(recipe, node, nodes[node], emit) for node in node_ids),
                                       return_exceptions=True)
        self._built.update(done(node) for node, result in zip(node_ids, results) if result is None)
        warnings = []
        for node, result in zip(node_ids, results):
            if isinstance(result, NodeLeftOut):
                warning = (f"Image {recipe['key'][:12]} cannot run on node {node[:8]}: {result}"
                           if isinstance(result, NodeCannotRun) else
                           f"Image {recipe['key'][:12]} was not built ahead on node {node[:8]}: {result}; "
                           "it builds there when a container of it first starts.")
                log.warning("%s", warning)
                warnings.append(warning)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, NodeLeftOut):
                raise result
        return warnings

    async def _on_node(self, recipe: dict[str, Any], node: str, gpus: set[bool], emit: Emit | None) -> None:
        import ray.exceptions
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        actor = _builder_class().options(
            num_cpus=0, max_restarts=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False)).remote()
        forward = _forwarder(recipe["key"], node, emit)
        started = asyncio.get_running_loop().time()
        try:
            try:  # placed, answering; which runtime it gives the image's containers, with GPUs or without
                if self.sandboxes is not None:
                    choices = {gpu: await asyncio.wait_for(actor.node_runtime.remote(self.node_runtime, gpu),
                                                           REACH_SECONDS) for gpu in sorted(gpus)}
                else:
                    choices = {gpu: {"runtime": "process", "why": None} for gpu in gpus}
                    await asyncio.wait_for(actor.missing_blobs.remote(recipe), REACH_SECONDS)
            except asyncio.TimeoutError:
                raise NodeLeftOut(f"its builder did not answer within {REACH_SECONDS:.0f} s") from None
            if any(choice["runtime"] == "sandbox" for choice in choices.values()):
                await self._fetch(actor, recipe, node, forward)
            for gpu, choice in choices.items():
                if choice["runtime"] is None:  # FERRY_NODE_RUNTIME=sandbox on a node that cannot
                    raise NodeCannotRun(f"FERRY_NODE_RUNTIME=sandbox, and this node cannot run "
                                        f"{'its GPU containers' if gpu else 'its containers'} in sandboxes "
                                        f"({choice['why']}); those that Ray places there fail to start")
            processes = [choice for choice in choices.values() if choice["runtime"] == "process"]
            if not processes:
                return
            step = rootfs_step(recipe) if self.sandboxes is not None else None
            if step is not None:
                raise NodeCannotRun(f"its step {step} needs an image root filesystem, which only sandbox nodes "
                                    f"give, and this node runs its containers as processes "
                                    f"({processes[0]['why'] or 'FERRY_NODE_RUNTIME=process'}); those containers "
                                    "fail to start there")
            await send_image_files(actor, recipe, self.read_blob)
            build = asyncio.ensure_future(actor.build.remote(recipe, self.step_timeout))
            await self._forward_events(actor, build, forward)
            result = await build
        except ray.exceptions.RayTaskError as exc:  # the build failed: the step's error
            cause = exc.cause if isinstance(exc.cause, ferry_errors.Error) else None
            raise cause or ferry_errors.ExecutionError(f"Image build on node {node[:8]} failed: {exc}") from None
        except ray.exceptions.RayActorError as exc:  # the node (or its builder) died
            reason = (str(exc).strip().splitlines() or ["its builder died"])[0]
            raise NodeLeftOut(f"the node was lost while building ({reason[:200]})") from None
        finally:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        took = asyncio.get_running_loop().time() - started
        log.warning("image %s %s on node %s in %.1f s", recipe["key"][:12],
                    "built" if result["built"] else "found", node[:8], took)

    async def _fetch(self, actor: Any, recipe: dict[str, Any], node: str, forward: Emit) -> None:
        """A sandbox node receives the image's layers and files it lacks, as for a container's
        start (node_layers.SandboxImages.send), shown as one step (the layers are built here
        first, if no GPU-less function's start built them)."""
        import ray.exceptions

        assert self.sandboxes is not None
        forward({"event": "plan", "labels": ["fetch image layers"], "key": ""})
        forward({"event": "step", "index": 0, "state": "building", "seconds": None})
        started = asyncio.get_running_loop().time()
        manifest = await self.sandboxes.manifest(recipe)
        try:
            sent = await self.sandboxes.send(actor, manifest, node, f"prebuild-{node[:16]}", self.read_blob)
            await actor.release.remote()
        except ray.exceptions.RayTaskError as exc:  # e.g. a tar that did not match its digest
            raise NodeLeftOut(f"its fetch of the layers failed ({str(exc.cause or exc)[:300]})") from None
        took = asyncio.get_running_loop().time() - started
        forward({"event": "step", "index": 0, "state": "built" if sent else "cached", "seconds": took})
        log.warning("image %s: layers %s on node %s in %.1f s", manifest["key"][:12],
                    f"fetched ({sent / MIB:.1f} MiB)" if sent else "found", node[:8], took)

    async def _forward_events(self, actor: Any, build: asyncio.Future, forward: Emit) -> None:
        """The builder's progress events, until its build has ended (then the last ones)."""
        import ray.exceptions

        unavailable_since: float | None = None
        while True:
            done = build.done()
            try:
                events = await actor.events.remote()
            except ray.exceptions.ActorUnavailableError:
                now = asyncio.get_running_loop().time()
                unavailable_since = unavailable_since or now
                if now - unavailable_since > UNAVAILABLE_SECONDS:
                    raise NodeLeftOut(f"its builder was unreachable for {UNAVAILABLE_SECONDS:.0f} s") from None
                await asyncio.sleep(1.0)
                continue
            except ray.exceptions.RayActorError:
                if build.done():
                    return  # (the build's own result says why)
                raise
            unavailable_since = None
            for event in events:
                forward(event)
            if done:
                return


def _forwarder(key: str, node: str, emit: Emit | None) -> Emit:
    """Events of a node's build as the client shows them: the node's build apart from the
    others' (its own `image`), its labels naming the node."""
    where = f"node {node[:8]}"
    venv_key = [""]  # the venv's key on the node (its plan's), which names its logs

    def forward(event: dict[str, Any]) -> None:
        if emit is None:
            return
        event = {**event, "image": f"{key}@{node[:8]}"}
        if event.get("event") == "plan":
            venv_key[0] = event.get("key") or ""
            event["labels"] = [f"{label} on {where}" for label in event.get("labels") or []]
        elif event.get("event") == "step" and event.get("state") == "failed":
            event["log"] = (f"$FERRY_NODE_CACHE/images/venvs/{venv_key[0]}.logs/{event.get('index', 0)}.log "
                            f"on {where}")
        emit(event)

    return forward
