"""Image layers for sandbox nodes (the ray runtime): the control plane builds an image's layers
as the sandbox runtime builds them on one machine (images/sandbox_builder.py), packs each layer
into a tar named by its sha256, and a node fetches the tars it lacks over its agent's
authenticated Ray calls and unpacks them into its cache, once per layer.

    control plane  $FERRY_HOME/images/node-tars/<sha256>.tar     one layer, packed by GNU tar with
                                                                 numeric owners (the shifted ids,
                                                                 runtimes/sandbox/ids.py) and
                                                                 extended attributes (overlay
                                                                 whiteouts and opaque directories,
                                                                 file capabilities)
                   $FERRY_HOME/images/node-tars/index/<id>.json  the tar of a layer directory as
                                                                 built (path, inode, mtime)
    node           $FERRY_NODE_CACHE/layers/<sha256>/             an unpacked layer (renamed into
                                                                 place once complete)
                   $FERRY_NODE_CACHE/layers/<sha256>.fetches      one line per fetch of it
                   $FERRY_NODE_CACHE/layers/.incoming/            tars being received, unpacking

    placed on a sandbox node -> `SandboxImages.manifest(recipe)` (built and packed here, once per
    image) -> agent.missing_layers(manifest) -> agent.put_layer(...) parts of at most
    PART_BYTES each; the last part of a tar checks its sha256 and unpacks it -> agent.start

This module is imported on the nodes: its node side (`NodeLayers`) imports no server state.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ....exception import ExecutionError, InvalidError
from ...images.venv_recipe import REFUSED, NoProgress
from .node_cache import record_layer_size

Emit = Callable[[dict[str, Any]], None]

log = logging.getLogger("ferry.server")

PART_BYTES = 16 * 1024 * 1024
_DIGEST = re.compile(r"[0-9a-f]{64}")
_TAR_FLAGS = ["--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls"]
_TRANSFER = re.compile(r"[A-Za-z0-9_.-]{1,128}")


def _tar(args: list[str], what: str) -> None:
    result = subprocess.run(["tar", *_TAR_FLAGS, *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise ExecutionError(f"{what} failed (tar exit {result.returncode}): {result.stderr.strip()[-500:]}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def rootfs_step(recipe: dict[str, Any]) -> str | None:
    """The label of the recipe's first step that needs an image root filesystem (run_commands,
    run_function, from_registry, add_local_*(copy=True) at a path), or None."""
    for step in recipe["steps"]:
        if step["kind"] in REFUSED or (step["kind"] == "copy" and step["args"]["kind"] != "python"):
            return str(step["label"])
    return None


# -- the control plane ------------------------------------------------------------------------
class LayerTars:
    """Layer directories packed into content-addressed tars under `root` (blocking)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.index = root / "index"
        self.index.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def pack(self, layer: Path) -> dict[str, Any]:
        """`{digest, size}` of the tar of `layer`, packed on first use (a layer rebuilt by a
        forced build is a new directory, so a new tar)."""
        info = os.stat(layer)
        source = hashlib.sha256(f"{layer}|{info.st_ino}|{info.st_mtime_ns}".encode()).hexdigest()
        entry = self.index / f"{source}.json"
        with self._lock:
            try:
                known = json.loads(entry.read_text())
                if (self.root / f"{known['digest']}.tar").is_file():
                    return known
            except (OSError, ValueError, KeyError):
                pass
            fd, staging = tempfile.mkstemp(prefix=".packing-", suffix=".tar", dir=self.root)
            os.close(fd)
            try:
                _tar(["-C", str(layer), "-cf", staging, "."], f"Packing the image layer {layer}")
                digest = _sha256(Path(staging))
                known = {"digest": digest, "size": os.stat(staging).st_size, "layer": str(layer)}
                entry.write_text(json.dumps(known))  # first: a tar is never found without its entry
                os.replace(staging, self.root / f"{digest}.tar")
            finally:
                Path(staging).unlink(missing_ok=True)
            return known

    def read(self, digest: str, offset: int, size: int) -> bytes:
        with open(self.root / f"{digest}.tar", "rb") as handle:
            handle.seek(offset)
            return handle.read(size)

    def has(self, manifest: dict[str, Any]) -> bool:
        """Whether every layer tar of `manifest` is still here (not collected since)."""
        return all((self.root / f"{layer['digest']}.tar").is_file() for layer in manifest["layers"])


def collect_tars(root: Path, cutoff: float, *, dry_run: bool = False, leftovers: bool = True) -> tuple[int, int]:
    """Delete the layer tars under `root` (`$FERRY_HOME/images/node-tars`) whose layer no longer
    exists as it was packed (its image removed, or rebuilt by a forced build), with their index
    entries, and (with `leftovers`) `.packing-*` files of interrupted packs; only those last
    written before `cutoff` (epoch: the garbage collection's grace period; `ferry image rm`
    passes now, without leftovers). Returns (files, bytes) removed."""
    if not root.is_dir():
        return 0, 0
    live: set[str] = set()
    dead_entries: list[Path] = []
    for entry in (root / "index").glob("*.json"):
        try:
            known = json.loads(entry.read_text())
            info = os.stat(known["layer"])
            source = hashlib.sha256(f"{known['layer']}|{info.st_ino}|{info.st_mtime_ns}".encode()).hexdigest()
        except (OSError, ValueError, KeyError):
            source = ""
        if source == entry.stem:
            live.add(str(known["digest"]))
        else:
            dead_entries.append(entry)
    removed = freed = 0
    for path in root.iterdir():
        ours = (path.suffix == ".tar" and _DIGEST.fullmatch(path.stem) and path.stem not in live) \
            or (leftovers and path.name.startswith(".packing-"))
        try:
            info = path.stat()
        except FileNotFoundError:
            continue
        if not ours or info.st_mtime >= cutoff:
            continue
        removed += 1
        freed += info.st_size
        if not dry_run:
            path.unlink(missing_ok=True)
    if not dry_run:
        for entry in dead_entries:
            entry.unlink(missing_ok=True)
    return removed, freed


class SandboxImages:
    """The control plane's side: an image's layers for sandbox nodes, built with the sandbox
    runtime's builder into the server's layer store and packed (see the module docstring)."""

    def __init__(self, backend: Any, tars: LayerTars | None = None) -> None:
        self.backend = backend  # images/sandbox_builder.py's SandboxBackend (None: `tars` only)
        self.tars = tars or LayerTars(backend.store.root / "node-tars")
        self._manifests: dict[tuple[str, str], dict[str, Any]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._sending: dict[str, asyncio.Lock] = {}  # per node: one container's start sends at a time

    async def manifest(self, recipe: dict[str, Any], emit: Emit | None = None) -> dict[str, Any]:
        """What a sandbox node needs to run the image of the node `recipe`: its layers' tars
        (base first), its interpreter, env, workdir and add_local_* mounts. Built once per
        image (and forced build), `emit` getting its progress events (the image service's, with
        `image` naming this build); a failed step raises the build's ExecutionError."""
        ident = (recipe["key"], recipe.get("build_id") or "")
        async with self._locks.setdefault(ident, asyncio.Lock()):
            if ident in self._manifests and not self.tars.has(self._manifests[ident]):
                del self._manifests[ident]  # its tars were collected (its image removed): built again
            if ident not in self._manifests:
                progress = None
                if emit is not None:
                    from ...images.venv_recipe import Progress

                    loop = asyncio.get_running_loop()
                    image = f"{recipe['key']}@control-plane"
                    progress = Progress(lambda event: loop.call_soon_threadsafe(emit, {**event, "image": image}))
                self._manifests[ident] = await asyncio.to_thread(self._build, recipe, progress or NoProgress())
            return self._manifests[ident]

    def _build(self, recipe: dict[str, Any], progress: Any) -> dict[str, Any]:
        from ...images.builder import _describe
        from ...images.commands import BuildFailed
        from ...images.sandbox_builder import build_sandbox_image

        secret_env = recipe.get("secret_env") or {}
        index_of = {step["label"]: str(index) for index, step in enumerate(recipe["steps"])}
        try:
            built = build_sandbox_image(self.backend, recipe, bool(recipe.get("build_id")), progress,
                                        lambda refs, label: dict(secret_env.get(index_of.get(label, ""), {})))
        except BuildFailed as failed:
            raise _describe(failed) from None
        return {"key": built.key, "python": built.python, "env": dict(built.env), "workdir": built.workdir,
                "layers": [self.tars.pack(layer) for layer in built.layers],
                "mounts": list(recipe.get("mounts") or [])}

    async def prepare(self, actor: Any, launch: dict[str, Any],
                      read_blob: Callable[[str], bytes] | None) -> Placement:
        """Where `actor` (the container's agent, placed) runs the container of `launch`: on a
        sandbox node, `launch` gets the image's manifest (`sandbox`) once the node has its
        layers and files; on a process node it stays as it is. Raises InvalidError naming the
        node where the image needs a root filesystem that node cannot give."""
        choice = await actor.node_runtime.remote(launch["node_runtime"], bool(launch.get("gpu_type")))
        node = choice["node_id"][:8]
        recipe = launch.get("image")
        if choice["runtime"] == "process" or recipe is None:
            reason = choice["why"] or "FERRY_NODE_RUNTIME=process"
            step = rootfs_step(recipe) if recipe is not None else None
            if step is not None:
                raise InvalidError(
                    f"Node {node} cannot run this image: its step {step} needs an image root filesystem, "
                    f"which only sandbox nodes give, and this node runs containers as processes ({reason}). "
                    "Install bubblewrap and passt on it and run `ray start` there as root, or keep such "
                    "functions off it (e.g. with a custom resource).")
            note = None if launch["node_runtime"] == "process" else \
                f"ferry: node {node} runs this container as a process: {reason}\n"
            return Placement(launch, note, 0)
        manifest = await self.manifest(recipe)
        sent = await self.send(actor, manifest, choice["node_id"], launch["container_id"], read_blob)
        note = f"ferry: node {node} runs this container in a sandbox\n"
        return Placement({**launch, "image": None, "sandbox": manifest}, note, sent)

    async def send(self, actor: Any, manifest: dict[str, Any], node_id: str, transfer: str,
                   read_blob: Callable[[str], bytes] | None) -> int:
        """The manifest's layers and add_local_* files that the node of `actor` (a container's
        agent, or a node's builder at app start, prebuild.py) lacks, pinned there from now
        until its holder lets go; the layer bytes sent."""
        # containers starting together on a node: the second asks once the first has sent (so
        # that a layer crosses once)
        async with self._sending.setdefault(node_id, asyncio.Lock()):
            missing = await actor.missing_layers.remote(manifest)
            started = time.monotonic()
            sent = await self._send_layers(actor, manifest, missing["layers"], transfer)
            if sent:
                log.warning("image %s: %d of its %d layers (%.1f MiB) sent to node %s in %.1f s",
                            manifest["key"][:12], len(missing["layers"]), len(manifest["layers"]), sent / 2**20,
                            node_id[:8], time.monotonic() - started)
            await _send_blobs(actor, missing["blobs"], read_blob)
        return sent

    async def _send_layers(self, actor: Any, manifest: dict[str, Any], missing: list[str], transfer: str) -> int:
        """The layers the node of `actor` lacks, in parts of at most PART_BYTES; the bytes sent."""
        sent = 0
        for digest in missing:
            size = next(layer["size"] for layer in manifest["layers"] if layer["digest"] == digest)
            offset = 0
            while True:
                data = await asyncio.to_thread(self.tars.read, digest, offset, PART_BYTES)
                last = offset + len(data) >= size
                await actor.put_layer.remote(transfer, digest, offset, data, last)
                offset += len(data)
                sent += len(data)
                if last:
                    break
        return sent


def sandbox_images(store: Any, blobs: Any, step_credentials: Any) -> SandboxImages | None:
    """The control plane's SandboxImages: the sandbox runtime's builder with the server's layer
    store (`$FERRY_HOME/images`), blob store and image settings. Building layers runs steps in
    sandboxes here, so it needs what the sandbox runtime needs: where this machine lacks it,
    FERRY_NODE_RUNTIME=sandbox stops the server's start (InvalidError saying why), and `auto`
    becomes `process` for this server (every node runs processes; a warning says why)."""
    import os

    from .... import _config
    from ...images.sandbox_builder import SandboxBackend
    from ..sandbox.bwrap import check_sandbox_support

    try:
        check_sandbox_support()
    except ExecutionError as exc:
        if _config.get("node_runtime") == "sandbox":
            raise InvalidError(f"FERRY_NODE_RUNTIME=sandbox: the control plane builds the images of sandbox nodes, "
                               f"and cannot here: {exc}") from None
        log.warning("nodes run containers as processes (FERRY_NODE_RUNTIME=auto): the control plane builds the "
                    "images of sandbox nodes, and cannot here: %s", exc)
        os.environ["FERRY_NODE_RUNTIME"] = "process"  # (this server's setting, read by its parts)
        return None
    return SandboxImages(SandboxBackend(
        store, blobs, base_dir=_config.get("base_rootfs_dir"), ca_bundle=_config.get("build_ca_bundle"),
        step_timeout=_config.get("image_build_timeout"), step_credentials=step_credentials))


@dataclass(frozen=True)
class Placement:
    """`SandboxImages.prepare`'s answer: the launch to start, a line for the container's log
    (which runtime its node gives it, and why), and the layer bytes sent to the node."""

    launch: dict[str, Any]
    note: str | None
    sent: int


async def _send_blobs(actor: Any, digests: list[str], read_blob: Callable[[str], bytes] | None) -> None:
    """Files from the blob store (add_local_* files) to the agent, in batches of PART_BYTES."""
    if digests and read_blob is None:
        raise InvalidError("The ray runtime has no blob store yet (the server is starting).")
    batch: dict[str, bytes] = {}
    for index, digest in enumerate(digests):
        batch[digest] = await asyncio.to_thread(read_blob, digest)  # type: ignore[misc]
        if sum(map(len, batch.values())) >= PART_BYTES or index == len(digests) - 1:
            await actor.put_blobs.remote(batch)
            batch = {}


# -- the node --------------------------------------------------------------------------------
class LayerReceiver:
    """What an actor on a node (a container's agent, agent.py; a node's builder at app start,
    node_builder.py) answers to receive an image's layers: the entries it asks about are pinned
    in the node's cache (`_pin`, node_cache.py) until it lets go."""

    _pin: Any = None

    async def missing_layers(self, manifest: dict[str, Any]) -> dict[str, list[str]]:
        """The image's layers and add_local_* files this sandbox node lacks, pinned from now."""
        from .agent import node_cache_dir
        from .node_cache import Pin

        layers = NodeLayers(node_cache_dir())
        self._pin = self._pin or Pin(layers.root)
        await asyncio.to_thread(self._pin.add, layers.entries(manifest))  # (before looking: none evicted after)
        return await asyncio.to_thread(layers.missing_files, manifest)

    async def put_layer(self, transfer: str, digest: str, offset: int, data: bytes, last: bool) -> None:
        """A part of an image layer's tar; the last one checks its digest and unpacks it."""
        from .agent import node_cache_dir

        await asyncio.to_thread(NodeLayers(node_cache_dir()).put, transfer, digest, offset, data, last)


class NodeLayers:
    """The layers one node has fetched, under `root` (FERRY_NODE_CACHE); blocking."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.layers = root / "layers"
        self.incoming = self.layers / ".incoming"

    def path(self, digest: str) -> Path:
        if not _DIGEST.fullmatch(digest):
            raise InvalidError(f"{digest[:70]!r} is not a layer's sha256.")
        return self.layers / digest

    def entries(self, manifest: dict[str, Any]) -> list[str]:
        """The node cache's entries (node_cache.py) that running the manifest's image uses: its
        layers and add_local_* files, to pin before asking what is missing."""
        mounts = manifest.get("mounts") or []
        return [*(f"layer {layer['digest']}" for layer in manifest["layers"]),
                *(f"mount {mount['digest']}" for mount in mounts),
                *(f"blob {entry if isinstance(entry, str) else entry[0]}"
                  for mount in mounts for entry in mount["files"].values())]

    def missing(self, manifest: dict[str, Any]) -> list[str]:
        """Digests of the manifest's layers this node has not unpacked yet."""
        return [layer["digest"] for layer in manifest["layers"] if not self.path(layer["digest"]).is_dir()]

    def missing_files(self, manifest: dict[str, Any]) -> dict[str, list[str]]:
        """What the node lacks to run the manifest's image: `layers` (digests of their tars) and
        `blobs` (add_local_* files, unless their mount was already written here)."""
        blobs: set[str] = set()
        for mount in manifest.get("mounts") or []:
            if not (self.root / "mounts" / mount["digest"]).is_dir():
                blobs.update(entry if isinstance(entry, str) else entry[0] for entry in mount["files"].values())
        return {"layers": self.missing(manifest),
                "blobs": sorted(d for d in blobs if not (self.root / "blobs" / d).is_file())}

    def paths(self, manifest: dict[str, Any]) -> list[Path]:
        """The unpacked layers of the manifest, base first (each must be here)."""
        paths = [self.path(layer["digest"]) for layer in manifest["layers"]]
        absent = [p.name[:12] for p in paths if not p.is_dir()]
        if absent:
            raise InvalidError(f"Image layer(s) {', '.join(absent)} were not sent to this node.")
        return paths

    def put(self, transfer: str, digest: str, offset: int, data: bytes, last: bool) -> None:
        """Write a part of the tar of layer `digest` at `offset` (one `transfer` per sender);
        with `last`, check the whole tar's sha256 and unpack it into place."""
        target = self.path(digest)
        if not _TRANSFER.fullmatch(transfer):
            raise InvalidError(f"{transfer[:140]!r} is not a transfer name.")
        self.incoming.mkdir(parents=True, exist_ok=True)
        part = self.incoming / f"{digest}.{transfer}.part"
        with open(part, "r+b" if offset else "wb") as handle:
            handle.seek(offset)
            handle.write(data)
        if not last:
            return
        try:
            if _sha256(part) != digest:
                raise InvalidError(f"The image layer sent to this node does not match its digest {digest[:12]}.")
            with open(self.incoming / f"{digest}.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # another container may be unpacking it too
                if not target.is_dir():
                    self._unpack(part, target)
        finally:
            part.unlink(missing_ok=True)

    def _unpack(self, tar: Path, target: Path) -> None:
        staging = Path(tempfile.mkdtemp(prefix=f"{target.name[:16]}-", dir=self.incoming))
        try:
            _tar(["--same-permissions", "--same-owner", "-C", str(staging), "-xf", str(tar)],
                 f"Unpacking the image layer {target.name[:12]}")
            os.rename(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        record_layer_size(self.layers, target.name)  # (node_cache.py: its size, for the bound)
        with open(self.layers / f"{target.name}.fetches", "a") as journal:
            journal.write(f"{time.time():.3f} pid {os.getpid()}\n")

