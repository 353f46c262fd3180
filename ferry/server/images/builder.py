"""The image service of the control plane: builds images for the server's runtime, off the
event loop, streams their progress to the requesting client, and completes container specs.

    app.create / image.build  ->  ImageService.build(wire, progress)  (worker thread, one
                                   build per image at a time; later requests find the cache;
                                   the ray runtime: then on the cluster's nodes, `node_builds`)
    container start           ->  ImageService.complete_spec(spec, definition)  (a cached
                                   lookup: the image was built when the app was published;
                                   after a server restart the first start re-checks the layers)

Progress events pushed to the client (`image` pushes carrying the request's `progress_id`):
`{"event": "plan", "labels"}`, `{"event": "step", "index", "state": cached|building|built|
failed, "seconds"}`, `{"event": "log", "index", "text"}`; with the ray runtime also
`{"event": "warning", "text"}` for a node left out of a build (runtimes/ray/prebuild.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from ...exception import Error, InvalidError
from ..blobs import BlobStore
from ..metrics import Metrics
from ..runtimes.base import ContainerSpec
from .commands import StepFailure, describe_failure
from .files import materialise_mount
from .layers import LayerStore
from ..runtimes.ray.node_layers import collect_tars
from .model import BuiltImage, ImageMount
from .sandbox_builder import BuildFailed, SandboxBackend, build_sandbox_image, check_packages
from .sandbox_steps import kill_running
from .venv_builder import ClusterBackend, VenvBackend
from .venv_recipe import Progress

log = logging.getLogger("ferry.server")
Emit = Callable[[dict[str, Any]], None]
# the ray runtime's build on its nodes (RayRuntime.build_image): (node recipe, the configs of
# the functions that use it or None, emit) -> warnings for nodes left out
NodeBuilds = Callable[[dict[str, Any], "list[dict[str, Any]] | None", "Emit | None"], Awaitable[list[str]]]
CONTAINER_HOME = "/var/lib/ferry"
"""FERRY_HOME inside sandbox containers; the source mount is bound at `<it>/mounts/<digest>`."""


class BuildsInProgress:
    """The builds running now, as the dashboard lists them: `{key, label, state: "building",
    step ("2/3 pip install six"), created}` per image that is building a step (an image found
    in the cache never shows). Fed with each build's progress events, on the event loop."""

    def __init__(self) -> None:
        self._labels: dict[str, list[str]] = {}
        self._building: dict[str, dict[str, Any]] = {}

    def note(self, key: str, event: dict[str, Any]) -> None:
        if event.get("event") == "plan":
            self._labels[key] = list(event.get("labels") or [])
        elif event.get("event") == "step" and event.get("state") == "building":
            labels = self._labels.get(key, [])
            index = int(event.get("index", 0))
            label = labels[index] if index < len(labels) else ""
            entry = self._building.setdefault(key, {"key": key, "label": " -> ".join(labels), "state": "building",
                                                    "created": time.time()})
            entry["step"] = f"{index + 1}/{len(labels)} {label}".strip()

    def done(self, key: str) -> None:
        self._labels.pop(key, None)
        self._building.pop(key, None)

    def list(self) -> list[dict[str, Any]]:
        return [dict(entry) for entry in self._building.values()]


class ImageService:
    def __init__(self, home: Path, blobs: BlobStore, runtime_name: str, *, base_dir: Path,
                 ca_bundle: str, step_timeout: float, secrets: Any = None,
                 step_credentials: Any = None, metrics: Metrics | None = None) -> None:
        self.store = LayerStore(home / "images")
        self.store.clean_staging()
        self.blobs = blobs
        self.mounts_root = home / "mounts"
        self.secrets = secrets
        self.backend: SandboxBackend | VenvBackend | ClusterBackend
        if runtime_name == "ray":  # each node builds the recipe (runtimes/ray/node_images.py)
            self.backend = ClusterBackend(self.store)
        elif runtime_name == "sandbox":
            self.backend = SandboxBackend(self.store, blobs, base_dir=base_dir, ca_bundle=ca_bundle,
                                          step_timeout=step_timeout, step_credentials=step_credentials)
        else:
            self.backend = VenvBackend(self.store, blobs, step_timeout)
        self._built: dict[str, BuiltImage] = {}
        self.metrics = metrics if metrics is not None else Metrics()
        self._locks: dict[str, asyncio.Lock] = {}
        self.building = BuildsInProgress()  # what the dashboard lists as building now
        self.node_builds: NodeBuilds | None = None  # set by the server for the ray runtime

    # -- secrets of build steps -----------------------------------------------------------
    def resolve_secrets(self, wire: dict[str, Any], user: str) -> dict[str, Any]:
        """The wire image with secret references of its steps stored by name only."""
        if not any(s["args"].get("secrets") for s in wire["steps"]):
            return wire
        if self.secrets is None:
            raise NotImplementedError("secrets= on image steps needs the server's secret store.")
        steps = []
        for step in wire["steps"]:
            refs = step["args"].get("secrets")
            if refs:
                resolved = self.secrets.resolve([(f"{user} image step {step['label']!r}", refs)])[0]
                step = {**step, "args": {**step["args"], "secrets": resolved}}
            steps.append(step)
        return {**wire, "steps": steps}

    def _secret_env(self, refs: list[dict[str, Any]], user: str) -> dict[str, str]:
        if not refs:
            return {}
        if self.secrets is None:
            raise NotImplementedError("secrets= on image steps needs the server's secret store.")
        return self.secrets.environment(refs, user)

    # -- building -------------------------------------------------------------------------
    async def build(self, wire: dict[str, Any], *, force: bool = False, emit: Emit | None = None,
                    on_nodes: bool = True, configs: list[dict[str, Any]] | None = None) -> BuiltImage:
        """Build (or find) `wire`; raises ExecutionError describing a failed step. The ray
        runtime (`on_nodes`): built on every node that could host one of `configs` (functions'
        configs; None: every node), as its first container there would."""
        _validate(wire)
        lock = self._locks.setdefault(wire["key"], asyncio.Lock())
        async with lock:
            loop = asyncio.get_running_loop()
            steps_built = [0]

            def threadsafe(event: dict[str, Any]) -> None:
                if event.get("state") == "built":
                    steps_built[0] += 1
                loop.call_soon_threadsafe(self.building.note, wire["key"], event)
                if emit is not None:
                    loop.call_soon_threadsafe(emit, event)

            def build_in_thread() -> BuiltImage:
                try:
                    return self._build_sync(wire, force, progress)
                finally:  # after the build's last event, even if its request was cancelled meanwhile
                    loop.call_soon_threadsafe(self.building.done, wire["key"])

            progress = Progress(threadsafe)
            started = loop.time()
            thread = asyncio.ensure_future(asyncio.to_thread(build_in_thread))
            try:
                built = await asyncio.shield(thread)
            except asyncio.CancelledError:
                # its request went away: the build goes on in its thread, and the lock is held
                # until it ends, so that no second build of this image runs beside it
                await asyncio.wait({thread})
                if not thread.cancelled():
                    thread.exception()  # (its outcome is the cache's; nobody waits for it)
                raise
            except BuildFailed as failed:
                self.metrics.image_build_failures += 1
                raise _describe(failed) from None
            if built.node_recipe is not None and self.node_builds is not None and on_nodes:
                await self._build_on_nodes(built, configs, emit)
            if steps_built[0]:  # an image found in the cache is no build
                self.metrics.image_builds.observe(loop.time() - started)
            self._built[wire["key"]] = built
            return built

    async def _build_on_nodes(self, built: BuiltImage, configs: list[dict[str, Any]] | None,
                              emit: Emit | None) -> None:
        """The ray runtime: `built` built on the cluster's nodes (each node's events under its
        own `image`, runtimes/ray/prebuild.py)."""
        assert self.node_builds is not None
        shown: set[str] = set()

        def on_loop(event: dict[str, Any]) -> None:
            shown.add(event["image"])
            self.building.note(event["image"], event)
            if emit is not None:
                emit(event)

        try:
            warnings = await self.node_builds(self._with_step_secrets(built).node_recipe or {}, configs, on_loop)
        except Error:
            self.metrics.image_build_failures += 1
            raise
        finally:
            for image in shown:
                self.building.done(image)
        for warning in warnings:  # nodes left out (unreachable, lost): the client says so
            if emit is not None:
                emit({"event": "warning", "text": warning})

    def _build_sync(self, wire: dict[str, Any], force: bool, progress: Progress) -> BuiltImage:
        threading.current_thread().name = f"ferry-image-{wire['key'][:8]}"
        if isinstance(self.backend, SandboxBackend):
            return build_sandbox_image(self.backend, wire, force, progress, self._secret_env)
        return self.backend.build(wire, force, progress, self._secret_env)

    async def ensure(self, wire: dict[str, Any]) -> BuiltImage:
        """The built image for a container start: cached, or checked/built without force."""
        built = self._built.get(wire["key"])
        if built is not None and all(p.is_dir() for p in built.layers):
            return built
        return await self.build(wire, on_nodes=False)  # (a node builds it for its container)

    async def complete_spec(self, spec: ContainerSpec, definition: dict[str, Any]) -> ContainerSpec:
        """`spec` with its image and mounts: the source mount and `add_local_*` files are
        written from the blob store on this host (once per content) for the runtime to bind."""
        wire = definition.get("image") or _default_image()
        image = await self.ensure(wire)
        env = {**spec.env, "FERRY_IMAGE_RECIPE": image.recipe} if image.recipe else spec.env
        if image.node_recipe is not None:  # the ray runtime: the node builds it and writes its files
            on_node = self._with_step_secrets(image)
            if definition.get("mount"):  # the code the container fetches into the node's cache
                on_node = dataclasses.replace(on_node, node_recipe={**(on_node.node_recipe or {}),
                                                                    "code": definition["mount"]["digest"]})
            return dataclasses.replace(spec, env=env, image=on_node)
        mounts = []
        for mount in wire.get("mounts") or []:
            host_dir = await asyncio.to_thread(materialise_mount, mount, self.blobs, self.mounts_root)
            mounts.append(ImageMount(mount["kind"], host_dir, mount["remote_path"]))
        code = definition.get("mount")
        code_dir = None
        if code:
            code_dir = await asyncio.to_thread(materialise_mount, code, self.blobs, self.mounts_root)
        return dataclasses.replace(spec, env=env, image=dataclasses.replace(image, mounts=tuple(mounts)),
                                   code_dir=code_dir)

    def _with_step_secrets(self, image: BuiltImage) -> BuiltImage:
        """The node's recipe with the environment of each step's secrets (`secret_env`, by step
        index), resolved now as the control plane's own build would."""
        assert image.node_recipe is not None
        secret_env = {str(index): self._secret_env(step["args"]["secrets"], step["label"])
                      for index, step in enumerate(image.node_recipe["steps"]) if step["args"].get("secrets")}
        if not secret_env:
            return image
        return dataclasses.replace(image, node_recipe={**image.node_recipe, "secret_env": secret_env})

    def shutdown(self) -> None:
        """Stop builds in progress (their requests fail; nothing half-built is kept)."""
        kill_running()

    # -- the cache ------------------------------------------------------------------------
    def list_images(self) -> dict[str, Any]:
        records = self.store.all_records()
        sizes: dict[str, int] = {}
        for record in records:
            for key in record.get("layers") or []:
                meta = self.store.meta(key) or {}
                if not meta.get("path"):
                    sizes[key] = int(meta.get("size") or 0)
        bases = {}
        for record in records:
            for key in record.get("layers") or []:
                meta = self.store.meta(key) or {}
                if meta.get("path"):
                    bases[meta["path"]] = int(meta.get("size") or 0)
        return {"images": records, "layers_bytes": sum(sizes.values()), "bases": bases,
                "runtime": self.backend.target}

    def remove(self, prefixes: list[str], in_use: set[str], *, everything: bool = False) -> dict[str, Any]:
        records = self.store.all_records() if everything else [self.store.find(p) for p in prefixes]
        busy = [r["key"] for r in records if r["key"] in in_use]
        if busy and not everything:
            raise InvalidError(f"Image(s) {', '.join(k[:12] for k in busy)} are used by running or deployed "
                               "apps; stop them first (`ferry app stop`).")
        removing = {r["key"] for r in records if r["key"] not in in_use}
        keep: set[str] = set()
        for record in self.store.all_records():
            if record["key"] not in removing:
                keep.update(record.get("layers") or [])
        freed = 0
        for record in records:
            if record["key"] in removing:
                freed += self.store.remove(record, keep)
                self._built.pop(record["key"], None)
        self._built = {k: v for k, v in self._built.items() if v.key not in removing}
        # the tars packed for sandbox nodes (ray runtime) of the layers just removed
        collect_tars(self.store.root / "node-tars", time.time(), leftovers=False)
        return {"removed": sorted(removing), "freed_bytes": freed, "kept_in_use": busy}

    def logs(self, prefix: str) -> dict[str, Any]:
        record = self.store.find(prefix)
        sections = []
        for key in record.get("layers") or []:
            meta = self.store.meta(key) or {}
            sections.append({"key": key, "label": meta.get("label", ""), "log": self.store.read_log(key)})
        for index, label in enumerate(record.get("step_labels") or []):  # the process runtime's venv
            path = self.store.venv_log(record["key"], index)
            sections.append({"key": f"{record['key']}.{index}", "label": label,
                             "log": path.read_text() if path.is_file() else None})
        return {"key": record["key"], "label": record.get("label"), "state": record.get("state"),
                "error": record.get("error"), "layers": sections}


def _default_image() -> dict[str, Any]:
    """Functions published without an image (older clients): debian_slim, default Python."""
    from ..._image import Image

    return Image.debian_slim()._wire().definition


def _validate(wire: Any) -> None:
    if not isinstance(wire, dict) or not isinstance(wire.get("steps"), list) or not wire["steps"] \
            or not isinstance(wire.get("key"), str):
        raise InvalidError("Invalid image definition; upgrade the client to this server's version.")
    for step in wire["steps"]:
        if step["kind"] == "apt_install":
            check_packages(step["args"]["packages"])


def _describe(failed: BuildFailed) -> Exception:
    error = describe_failure(failed, f"`ferry image logs {failed.image_key[:12]}`")
    if not isinstance(failed.failure, (StepFailure, InvalidError, NotImplementedError)):
        log.warning("image build failed at step %d (%s)", failed.plan.index + 1, failed.plan.label,
                    exc_info=failed.failure)
    return error
