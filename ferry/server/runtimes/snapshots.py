"""Memory snapshots: a template process per snapshot key (the process runtime's here; the
sandbox runtime's templates are sandboxes, sandbox/snapshots.py).

`enable_memory_snapshot=True` makes the first container of a function wait for a template: a
zygote (zygote.py) that has also imported the function's code and, for a class, built its
instance and run its `@enter(snap=True)` hooks (ferry/_container/snapshot.py). Every container
of that function is then forked from it and runs only the `snap=False` hooks.

    key = sha256(interpreter and its start-up settings, image, code, function or class,
                 class parameters, Ferry's version)

Anything else changes nothing the template holds: the image's environment is in the image's
key, a changed hook is changed code. The template never sees what a container gets: secrets,
its credential, GPUs (CUDA_VISIBLE_DEVICES is empty while the snapshot is made), volumes, the
control plane. Templates live as long as the server (a restart makes them again, on first
use); at most MAX_TEMPLATES are kept, the least recently used one without running containers
going first.

A snapshot that cannot be made or used (an import or hook raised, a thread was left running,
a `serialized=True` function, a container with volumes) leaves the container to start the
ordinary way; the reason reaches the function's logs once per key.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Mapping

import ferry

from .base import ContainerSpec, inherited_environment
from .zygote import LOCALE_VARS, Zygote, interpreter_key

log = logging.getLogger("ferry.server")

MAX_TEMPLATES = 8
MAKE_TIMEOUT = 900.0  # imports and snap hooks that load models take a while
_LOG_TAIL_LINES = 12


class SnapshotTemplates:
    """The snapshot templates of one process runtime, made on first need."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._templates: OrderedDict[str, tuple[Zygote, asyncio.Task]] = OrderedDict()
        self._failed: dict[str, str] = {}    # key -> why its snapshot cannot be made
        self._told: set[str] = set()         # keys whose failure reached the function's logs
        self._stopping: set[asyncio.Task] = set()

    async def template_for(self, spec: ContainerSpec, python: str, env: Mapping[str, str],
                           cwd: str | None, has_volumes: bool) -> tuple[Zygote | None, str]:
        """The process runtime's ready template for `spec`'s snapshot (made now, waiting for
        it, if it is the first), or None and why not: the reason once per key, then ""."""
        assert spec.snapshot is not None
        image_env = spec.image.env if spec.image is not None else {}

        def make(request: Path, log_path: Path) -> Zygote:
            return Zygote(python, template_environment(env, image_env), snapshot=request,
                          log_path=log_path, cwd=cwd)

        request = {"definition": spec.snapshot["definition"], "params": spec.snapshot.get("params"),
                   "code_dir": str(spec.code_dir) if spec.code_dir else None}
        return await self.template(snapshot_key(spec, python, env), _why_not(spec, has_volumes), request, make)

    async def template(self, key: str, reason: str, request: dict[str, Any],
                       make: Callable[[Path, Path], Zygote]) -> tuple[Zygote | None, str]:
        """The ready template of snapshot `key`, made by `make(request file, log file)` from
        `request` (what ferry/_container/snapshot.py prepares) if it is the first; or None and
        why not (`reason`, or why it could not be made): the reason once per key, then ""."""
        reason = reason or self._failed.get(key, "")
        if reason:
            return None, self.tell_once(key, reason)
        entry = self._templates.get(key)
        if entry is not None and entry[0].state == "dead" and entry[1].done():  # it ended: anew
            self._stop_later(entry[0])
            entry = None
        if entry is None:
            entry = self._make(key, request, make)
        self._templates.move_to_end(key)
        zygote, task = entry
        try:
            await asyncio.wait_for(asyncio.shield(task), MAKE_TIMEOUT)
        except asyncio.TimeoutError:
            zygote.close()
            zygote.failure = f"it was not ready after {MAKE_TIMEOUT:g} s"
        if zygote.state != "ready":
            self._failed[key] = self._failure(key, zygote)
            if self._templates.get(key) is entry:
                del self._templates[key]
                await zygote.stop()
            return None, self.tell_once(key, self._failed[key])
        return zygote, ""

    def _make(self, key: str, request: dict[str, Any],
              make: Callable[[Path, Path], Zygote]) -> tuple[Zygote, asyncio.Task]:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{key}.json"
        path.write_text(json.dumps(request))
        zygote = make(path, self.root / f"{key}.log")
        task = asyncio.create_task(zygote.start())
        self._templates[key] = (zygote, task)
        self._evict()
        return zygote, task

    def _evict(self) -> None:
        """Keep MAX_TEMPLATES: stop the least recently used ones that have no containers running."""
        for key in list(self._templates):
            if len(self._templates) <= MAX_TEMPLATES:
                return
            zygote, task = self._templates[key]
            if task.done() and not zygote.has_children:
                del self._templates[key]
                self._stop_later(zygote)

    def _stop_later(self, zygote: Zygote) -> None:
        task = asyncio.create_task(zygote.stop())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    def _failure(self, key: str, zygote: Zygote) -> str:
        tail = ""
        try:
            lines = (self.root / f"{key}.log").read_text(errors="replace").splitlines()
            tail = "\n".join(lines[-_LOG_TAIL_LINES:])
        except OSError:
            pass
        return (zygote.failure or "the template ended") + (f"\n{tail}" if tail else "")

    def tell_once(self, key: str, reason: str) -> str:
        """`reason`, the first time a reason is given for snapshot `key`; then ""."""
        if key in self._told:
            return ""
        self._told.add(key)
        return reason

    async def close(self) -> None:
        await asyncio.gather(*self._stopping, return_exceptions=True)
        for zygote, task in self._templates.values():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await zygote.stop()
        self._templates.clear()


def snapshot_key(spec: ContainerSpec, python: str, env: Mapping[str, str]) -> str:
    """What a snapshot depends on: the interpreter, the image, the code, the function or class
    and its parameters, and Ferry's version."""
    assert spec.snapshot is not None
    image = spec.image
    parts = {
        "interpreter": interpreter_key(python, env),
        "pythonpath": env.get("PYTHONPATH", ""),
        "image": image.key if image is not None else "",
        "code": str(spec.code_dir or ""),  # named by the digest of its files
        "snapshot": spec.snapshot,
        "ferry": ferry.__version__,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def template_environment(env: Mapping[str, str], image_env: Mapping[str, str]) -> dict[str, str]:
    """The template's environment: the server's inherited one, the image's, and the
    interpreter's start-up settings (PYTHONPATH with the image's sources); never the
    container's secrets or credential, and no GPU (CUDA_VISIBLE_DEVICES is empty while the
    snapshot is made)."""
    base = {k: v for k, v in inherited_environment().items()
            if not (k.startswith("PYTHON") or k in LOCALE_VARS)}
    startup = {k: v for k, v in env.items() if k.startswith("PYTHON") or k in LOCALE_VARS}
    return {**base, **image_env, **startup, "CUDA_VISIBLE_DEVICES": "", "NVIDIA_VISIBLE_DEVICES": "void",
            "FERRY_IS_CONTAINER": "1"}


def _why_not(spec: ContainerSpec, has_volumes: bool) -> str:
    assert spec.snapshot is not None
    if spec.snapshot.get("pickled"):
        return ("a serialized=True function (or one defined inside another) has no module for a "
                "snapshot to import")
    if has_volumes:
        return ("containers with volumes are not forked on the process runtime (their volumes are bound "
                "in a mount namespace of their own)")
    return ""


def notice(reason: str) -> str:
    """The log line of a snapshot that could not be made or used."""
    return f"ferry: memory snapshot not used, the container starts the ordinary way: {reason}\n"


