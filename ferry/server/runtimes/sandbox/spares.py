"""Spare sandboxes: a sandbox started ahead of the container it will become.

Most of a sandbox container's start is not the function's: the user, mount, PID and network
namespaces, the overlay root, pasta connecting the network, the interpreter starting and
importing Ferry. A spare has done all of that, for one kind of container, and waits (in
`ferry._container.spare`) on a pipe for its claim. When a container of that kind starts, the
runtime claims the spare: it writes the container's environment (its ids, credential and
secrets, which the spare never had) and the spare becomes that container. Then it starts
another spare for the next one.

    kind = image layers, binds (Ferry, the code, add_local_* files, the control socket),
           environment without the container's own variables, working directory, network
           mode, cpu=/memory= limits (its cgroup is made with the spare)

A spare is a sandbox like any other and becomes exactly one container: nothing is shared with
other containers. Containers with volumes or GPUs (per-container views and devices) start the
ordinary way. At most FERRY_SANDBOX_SPARES wait at once (0: none), one per kind; one unclaimed
for SPARE_IDLE_SECONDS is ended, as is the oldest when another kind needs room. The first
container of a kind starts the ordinary way (there is no spare for it yet).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..base import ContainerHandle, ContainerSpec, OutputSink
from ..cgroups import Cgroup, CgroupLimits
from .bwrap import SandboxSpec, launch_async

if TYPE_CHECKING:
    from .runtime import SandboxRuntime

log = logging.getLogger("ferry.server")

SPARE_IDLE_SECONDS = 120.0
_HELD_OUTPUT = 64 * 1024  # what a spare may print before its claim (import warnings), kept for it


def spares_can_serve(spec: ContainerSpec) -> bool:
    """Whether a spare can become this container (no per-container volumes or GPUs)."""
    return not spec.volumes and not spec.gpu_indices


class _Output:
    """A spare's output: held until its claim, then the container's."""

    def __init__(self) -> None:
        self.sink: OutputSink | None = None
        self.held: list[tuple[str, str]] = []
        self.held_size = 0

    def __call__(self, stream: str, text: str) -> None:
        if self.sink is not None:
            self.sink(stream, text)
        elif self.held_size < _HELD_OUTPUT:
            self.held.append((stream, text))
            self.held_size += len(text)

    def attach(self, sink: OutputSink) -> None:
        for stream, text in self.held:
            sink(stream, text)
        self.held.clear()
        self.sink = sink


@dataclass
class Spare:
    kind: str
    process: asyncio.subprocess.Process
    claim_fd: int                   # the write end of its claim pipe
    scratch: Path
    cgroup: Cgroup | None
    output: _Output
    readers: list[asyncio.Task]
    born: float = field(default_factory=time.monotonic)

    @property
    def alive(self) -> bool:
        return self.process.returncode is None


class Spares:
    """The spare sandboxes of one sandbox runtime."""

    def __init__(self, runtime: "SandboxRuntime", limit: int) -> None:
        self.runtime = runtime
        self.limit = limit
        self._ready: dict[str, Spare] = {}
        self._starting: set[str] = set()
        self._tasks: set[asyncio.Task] = set()

    # -- claiming ---------------------------------------------------------------------------
    def claim(self, kind: str, spec: ContainerSpec, sandbox: SandboxSpec,
              on_output: OutputSink) -> ContainerHandle | None:
        """Make the waiting spare of `kind` (`kind_of(spec)`) this container (None when there is none)."""
        from .runtime import SandboxHandle

        spare = self._ready.pop(kind, None)
        if spare is None:
            return None
        if not spare.alive:
            self._discard(spare)
            return None
        claim = json.dumps({"env": dict(sandbox.env), "cwd": sandbox.cwd, "module": spec.entry_module}).encode()
        try:
            _write_all(spare.claim_fd, claim)
        except OSError:  # it died meanwhile
            self._discard(spare)
            return None
        finally:
            os.close(spare.claim_fd)
        spare.output.attach(on_output)
        scratch = spare.scratch
        return SandboxHandle(spare.process, spare.readers, spare.cgroup, spec.memory_mb,
                             cleanup=lambda: shutil.rmtree(scratch, ignore_errors=True))

    def kind_of(self, spec: ContainerSpec) -> str:
        """What a spare for `spec`'s container must have been started with."""
        sandbox = self.runtime.sandbox_spec(spec, self.runtime.scratch_root / "kind", spare_fd=0)
        parts = {"layers": [str(p) for p in sandbox.layers], "argv": list(sandbox.argv),
                 "binds": [list(map(str, b)) for b in sandbox.binds], "env": dict(sandbox.env),
                 "cwd": sandbox.cwd, "network": sandbox.network, "devices": list(sandbox.devices),
                 "capabilities": list(sandbox.capabilities), "cpu": spec.cpu, "memory": spec.memory_mb}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]

    # -- starting ---------------------------------------------------------------------------
    def replenish(self, kind: str, spec: ContainerSpec) -> None:
        """Start a spare of `kind` (`kind_of(spec)`) in the background unless one waits or is starting."""
        if kind in self._ready or kind in self._starting:
            return
        self._make_room()
        if len(self._ready) + len(self._starting) >= self.limit:
            return
        self._starting.add(kind)
        task = asyncio.create_task(self._start(kind, spec))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start(self, kind: str, spec: ContainerSpec) -> None:
        spare_id = "spare-" + secrets.token_hex(6)
        scratch = self.runtime.scratch_root / spare_id
        claim_r, claim_w = os.pipe()
        cgroup = None
        try:
            sandbox = self.runtime.sandbox_spec(spec, scratch, spare_fd=claim_r)
            if spec.memory_mb is not None or spec.cpu is not None:
                cgroup = Cgroup.create(spare_id, CgroupLimits(memory_mb=spec.memory_mb, cpu=spec.cpu))
            process = await launch_async(sandbox, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                         cgroup=cgroup)  # (closes claim_r: the spare has it)
        except Exception as exc:  # noqa: BLE001 - containers of this kind start the ordinary way
            log.warning("could not start a spare sandbox: %s", exc)
            os.close(claim_w)
            if cgroup is not None:
                cgroup.destroy()
            shutil.rmtree(scratch, ignore_errors=True)
            self._starting.discard(kind)
            return
        from ..process import _pump

        output = _Output()
        assert process.stdout is not None and process.stderr is not None
        readers = [asyncio.create_task(_pump(process.stdout, "stdout", output)),
                   asyncio.create_task(_pump(process.stderr, "stderr", output))]
        spare = Spare(kind, process, claim_w, scratch, cgroup, output, readers)
        self._starting.discard(kind)
        self._ready[kind] = spare
        asyncio.get_running_loop().call_later(SPARE_IDLE_SECONDS, self._expire, kind, spare)

    # -- ending -------------------------------------------------------------------------------
    def _expire(self, kind: str, spare: Spare) -> None:
        if self._ready.get(kind) is spare:
            del self._ready[kind]
            self._discard(spare)

    def _make_room(self) -> None:
        """At the limit, end the oldest waiting spare (another kind needs room)."""
        if self._ready and len(self._ready) + len(self._starting) >= self.limit:
            kind = min(self._ready, key=lambda k: self._ready[k].born)
            self._discard(self._ready.pop(kind))

    def _discard(self, spare: Spare) -> None:
        """End an unclaimed spare: an empty claim lets it exit; its leftovers go once it has."""
        try:
            os.close(spare.claim_fd)
        except OSError:
            pass
        task = asyncio.create_task(self._reap(spare))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reap(self, spare: Spare) -> None:
        try:
            await asyncio.wait_for(spare.process.wait(), 10)
        except asyncio.TimeoutError:
            try:
                os.killpg(spare.process.pid, 9)
            except ProcessLookupError:
                pass
            await spare.process.wait()
        await asyncio.gather(*spare.readers, return_exceptions=True)
        if spare.cgroup is not None:
            spare.cgroup.destroy()
        await asyncio.to_thread(shutil.rmtree, spare.scratch, True)

    async def close(self) -> None:
        """End every spare (the server is stopping), those still starting too."""
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        for kind in list(self._ready):
            self._discard(self._ready.pop(kind))
        await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
