"""A node's images (the ray runtime, on the node): the venv of an image's recipe, built with the
process runtime's own builder (images/venv_recipe.py) into the node's cache, and the image's
local files written there, content-addressed. Imported by the agent on the node: it imports
no server state.

    $FERRY_NODE_CACHE/
        blobs/<sha256>                  files the control plane sent: requirements files,
                                        add_local_* and copied sources (kept; content-addressed)
        images/venvs/<key>/             one venv per recipe, keyed as the process runtime keys
                                        it (the node's interpreter, the runtime packages, steps)
        images/venvs/<key>.logs/N.log   the output of step N of its last build
        images/venvs/<key>.builds       one line per build of it on this node
        images/venvs/<key>.lock         held (flock) while a container checks or builds it, so
                                        concurrent containers of one image build it once
        images/venvs/<key>.size         its bytes, measured after its build (node_cache.py)
        images/ferry-package/ferry      a link to the node's Ferry, on each venv's path
        mounts/<digest>/                add_local_* files of one mount
        pins/, evictions.log            what containers and builds use now, what was evicted (node_cache.py)

The cache is bounded (FERRY_NODE_CACHE_MAX_GB): node_cache.py removes least recently used
entries, never those a running container or a build pins (`entries` names an image's).

How files reach the node: with a container's start, over Ray's authenticated actor calls of
its agent. The control plane asks the agent which of the recipe's files the node lacks
(`missing_blobs`: none once the venv is built and the mounts written) and sends those from its
blob store (`put_blobs`, in batches of at most `BLOB_BATCH_BYTES`); the agent checks each
file's sha256 before keeping it. A node never reads the control plane's files.

What the container gets: the venv's interpreter (or the node's own Python for a plain image),
the image's env and workdir, add_local_python_source (mounted: `mounts/<digest>`; copied: the
venv's `src/`) on PYTHONPATH, and add_local_dir/add_local_file bound read-only at their paths
in the container's private mount namespace (as volumes are: the mount points are created on
the node as empty directories or files where they do not exist).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ....exception import InvalidError
from ...images.commands import BuildFailed, describe_failure
from ...images.files import materialise_mount
from ...images.venv_recipe import COMPLETE, NoProgress, VenvBuilder, VenvPlan, plan_venv
from .node_cache import Pin, record_venv_size

BLOB_BATCH_BYTES = 16 * 1024 * 1024
_DIGEST = re.compile(r"[0-9a-f]{64}")


def recipe_files(recipe: dict[str, Any], *, steps: bool = True) -> set[str]:
    """The digests of every file the recipe needs: its steps' (requirements files, copied
    sources) when `steps`, and its mounts'."""
    digests: set[str] = set()
    for step in recipe["steps"] if steps else []:
        digests.update(step["args"].get("requirements") or [])
        if step["kind"] == "copy":
            digests.update(_digest(entry) for entry in step["args"]["files"].values())
    for mount in recipe.get("mounts") or []:
        digests.update(_digest(entry) for entry in mount["files"].values())
    return digests


def _digest(entry: Any) -> str:
    return entry if isinstance(entry, str) else entry[0]


@dataclass
class NodeImage:
    """What a container of the image runs with on this node."""

    key: str
    python: str
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    pythonpath: list[str] = field(default_factory=list)
    binds: list[tuple[Path, str, bool]] = field(default_factory=list)  # (node path, container path, ro)
    built: bool = False  # this start built the venv (else: found in the node's cache, or none needed)


class NodeImages:
    """The image cache of one node, under `root` (FERRY_NODE_CACHE)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.venvs = root / "images" / "venvs"
        self.mounts = root / "mounts"

    # -- files --------------------------------------------------------------------------------
    def missing(self, recipe: dict[str, Any], pin: Pin | None = None) -> list[str]:
        """The recipe's files this node still needs and lacks; with `pin`, the image's entries
        are pinned first (node_cache.py: not evicted while `pin` holds them)."""
        if pin is not None:
            pin.add(self.entries(recipe))
        plan = plan_venv(recipe, mounts_at_paths=True)
        built = not plan.needs_venv or self._complete(plan, recipe)
        needed = recipe_files(recipe, steps=not built)
        for mount in recipe.get("mounts") or []:
            if (self.mounts / mount["digest"]).is_dir():
                needed -= {_digest(entry) for entry in mount["files"].values()}
        return sorted(d for d in needed if not (self.blobs / d).is_file())

    def put(self, blobs: dict[str, bytes]) -> None:
        """Keep files sent by the control plane (each checked against its digest)."""
        self.blobs.mkdir(parents=True, exist_ok=True)
        for digest, data in blobs.items():
            if not _DIGEST.fullmatch(digest) or hashlib.sha256(data).hexdigest() != digest:
                raise InvalidError(f"A file sent to this node does not match its digest {digest[:64]!r}.")
            fd, staging = tempfile.mkstemp(prefix=".staging-", dir=self.blobs)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(staging, self.blobs / digest)

    def get(self, digest: str) -> bytes:
        try:
            return (self.blobs / digest).read_bytes()
        except (FileNotFoundError, ValueError):
            raise InvalidError(f"The file {digest[:12]} of this image was not sent to node "
                               f"{socket.gethostname()} (its cache {self.root}).") from None

    def entries(self, recipe: dict[str, Any]) -> set[str]:
        """The node cache's entries the image uses (node_cache.py): its venv, files and mounts,
        and the code mount the recipe's container runs (`code`, when the control plane sent it)."""
        plan = plan_venv(recipe, mounts_at_paths=True)
        entries = {f"blob {digest}" for digest in recipe_files(recipe)}
        entries.update(f"mount {mount['digest']}" for mount in recipe.get("mounts") or [])
        if plan.needs_venv:
            entries.add(f"venv {plan.key}")
        if recipe.get("code"):
            entries.add(f"code {recipe['code']}")
        return entries

    # -- the image ------------------------------------------------------------------------------
    def prepare(self, recipe: dict[str, Any], step_timeout: float, where: str, progress: Any = None) -> NodeImage:
        """The image ready to run on this node: its venv built (once per recipe per node) and its
        files written. A failed step raises the error a local build gives, naming the node's log.
        `progress` gets the build's events (venv_recipe.py; a venv found: its steps "cached")."""
        plan = plan_venv(recipe, mounts_at_paths=True)
        image = NodeImage(key=plan.key, python=plan.python, env=dict(plan.env), workdir=plan.workdir)
        if plan.needs_venv:
            venv = self.venvs / plan.key
            image.built = self._ensure_venv(plan, venv, recipe, step_timeout, where, progress or NoProgress())
            image.python = str(venv / "bin" / "python")
            image.pythonpath += plan.pythonpath(venv)
        for mount in recipe.get("mounts") or []:
            directory = materialise_mount(mount, self, self.mounts)
            if mount["kind"] == "python":
                image.pythonpath.append(str(directory))
            elif mount["kind"] == "dir":
                _mount_point(Path(mount["remote_path"]), directory=True)
                image.binds.append((directory, mount["remote_path"], True))
            else:
                only = next(iter(directory.iterdir()))
                _mount_point(Path(mount["remote_path"]), directory=False)
                image.binds.append((only, mount["remote_path"], True))
        return image

    def _complete(self, plan: VenvPlan, recipe: dict[str, Any]) -> bool:
        marker = self.venvs / plan.key / COMPLETE
        build_id = recipe.get("build_id") or ""
        try:
            found = marker.read_text()
        except FileNotFoundError:
            return False
        return not build_id or found == build_id

    def _ensure_venv(self, plan: VenvPlan, venv: Path, recipe: dict[str, Any], step_timeout: float,
                     where: str, progress: Any) -> bool:
        self.venvs.mkdir(parents=True, exist_ok=True)
        with open(self.venvs / f"{plan.key}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another container of this image may be building it
            if self._complete(plan, recipe):
                progress.plan(plan.labels, plan.key)
                for index in range(len(plan.steps)):
                    progress.step(index, "cached")
                return False
            secret_env = recipe.get("secret_env") or {}
            index_of = {step["label"]: str(index) for index, step in enumerate(plan.steps)}
            builder = VenvBuilder(self.get, step_timeout, self.root / "images" / "ferry-package")
            logs = self.venvs / f"{plan.key}.logs"
            try:
                builder.build(plan, venv, lambda index: logs / f"{index}.log", progress,
                              lambda refs, label: dict(secret_env.get(index_of.get(label, ""), {})),
                              build_id=recipe.get("build_id") or "")
            except BuildFailed as failed:
                raise describe_failure(failed, f"{logs}/{failed.plan.index}.log on {where}") from None
            with open(self.venvs / f"{plan.key}.builds", "a") as journal:
                journal.write(f"{time.time():.3f} pid {os.getpid()} {where}\n")
            record_venv_size(self.venvs, plan.key)
            return True


def _mount_point(path: Path, *, directory: bool) -> None:
    """Create where an add_local_* mount is bound, if the node lacks it."""
    try:
        if directory:
            path.mkdir(parents=True, exist_ok=True)
        elif not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        elif path.is_dir():
            raise InvalidError(f"add_local_file(..., {str(path)!r}): that path is a directory on this node.")
    except (FileExistsError, NotADirectoryError):
        raise InvalidError(f"Cannot mount add_local_* files at {str(path)!r}: a file on this node is in the "
                           "way (the ray runtime shares the node's filesystem). Choose another path.") from None
