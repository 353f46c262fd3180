"""A pool of spare sandboxes, one per kind of container: what the sandbox runtime on one machine
(spares.py) and a sandbox node's agent (ray/node_spares.py) share.

A spare is a sandbox started ahead that waits (in `ferry._container.spare`) on a claim pipe. The
pool starts one per kind (`replenish`), at most `limit` at once (the oldest waiting one ends
when another kind needs room, one unclaimed for SPARE_IDLE_SECONDS ends), and hands a waiting
one over exactly once (`take`): it writes the claim (`{env, cwd, module}`, the container's own
environment) and closes the pipe, and the spare becomes that container. What a spare needs
(its sandbox, its cgroup, what to remove once it has ended) its owner prepares (`Prepare`).
A spare whose claim pipe is closed without a claim exits; one that does not is killed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from ..base import OutputSink
from ..cgroups import Cgroup
from .bwrap import SandboxSpec, launch_async

log = logging.getLogger("ferry.server")

SPARE_IDLE_SECONDS = 120.0
_HELD_OUTPUT = 64 * 1024  # what a spare may print before its claim (import warnings), kept for it


class SpareOutput:
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
class Prepared:
    """What a spare is started with: its sandbox (waiting on the claim pipe's read end), its
    cgroup (the kind's limits, made with the spare) and `cleanup`, run once it has ended."""

    sandbox: SandboxSpec
    cgroup: Cgroup | None
    cleanup: Callable[[], None]


# Prepare(spare_id, claim_fd): the spare's sandbox, reading its claim from `claim_fd`
Prepare = Callable[[str, int], Awaitable[Prepared]]


@dataclass
class Spare:
    kind: str
    process: asyncio.subprocess.Process
    claim_fd: int                   # the write end of its claim pipe
    cgroup: Cgroup | None
    cleanup: Callable[[], None]
    output: SpareOutput
    readers: list[asyncio.Task]
    born: float = field(default_factory=time.monotonic)

    @property
    def alive(self) -> bool:
        return self.process.returncode is None


def kind_key(parts: dict[str, Any]) -> str:
    """A kind's key: the hash of what a spare of it was started with (JSON-able)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def sandbox_kind_parts(sandbox: SandboxSpec) -> dict[str, Any]:
    """What of a spare's sandbox makes its kind (everything a container of it shares)."""
    return {"layers": [str(p) for p in sandbox.layers], "argv": list(sandbox.argv),
            "binds": [list(map(str, b)) for b in sandbox.binds], "env": dict(sandbox.env),
            "cwd": sandbox.cwd, "network": sandbox.network, "devices": list(sandbox.devices),
            "capabilities": list(sandbox.capabilities)}


class SparePool:
    """Waiting spares, one per kind, at most `limit` (see the module docstring)."""

    def __init__(self, limit: int, idle_seconds: float = SPARE_IDLE_SECONDS) -> None:
        self.limit = limit
        self.idle_seconds = idle_seconds
        self._ready: dict[str, Spare] = {}
        self._starting: set[str] = set()
        self._tasks: set[asyncio.Task] = set()

    def waiting(self) -> list[Spare]:
        """The spares waiting for a claim now."""
        return list(self._ready.values())

    # -- claiming ---------------------------------------------------------------------------
    def take(self, kind: str, claim: dict[str, Any], on_output: OutputSink) -> Spare | None:
        """Hand the waiting spare of `kind` its `claim` ({env, cwd, module}) and its output to
        `on_output`; None when none waits (or it died meanwhile)."""
        spare = self._ready.pop(kind, None)
        if spare is None:
            return None
        if not spare.alive:
            self._discard(spare)
            return None
        try:
            _write_all(spare.claim_fd, json.dumps(claim).encode())
        except OSError:  # it died meanwhile
            self._discard(spare)
            return None
        finally:
            os.close(spare.claim_fd)
        spare.output.attach(on_output)
        return spare

    # -- starting ---------------------------------------------------------------------------
    def replenish(self, kind: str, prepare: Prepare) -> None:
        """Start a spare of `kind` in the background unless one waits or is starting."""
        if self.limit <= 0 or kind in self._ready or kind in self._starting:
            return
        self._make_room()
        if len(self._ready) + len(self._starting) >= self.limit:
            return
        self._starting.add(kind)
        self._background(self._start(kind, prepare))

    async def _start(self, kind: str, prepare: Prepare) -> None:
        claim_r, claim_w = os.pipe()
        prepared: Prepared | None = None
        try:
            prepared = await prepare("spare-" + secrets.token_hex(6), claim_r)
        except Exception as exc:  # noqa: BLE001 - containers of this kind start the ordinary way
            os.close(claim_r)
            self._not_started(kind, claim_w, None, exc)
            return
        try:  # (launch_async closes claim_r, started or not: the spare has it)
            process = await launch_async(prepared.sandbox, stdout=asyncio.subprocess.PIPE,
                                         stderr=asyncio.subprocess.PIPE, cgroup=prepared.cgroup)
        except Exception as exc:  # noqa: BLE001
            self._not_started(kind, claim_w, prepared, exc)
            return
        from ..process import _pump

        output = SpareOutput()
        assert process.stdout is not None and process.stderr is not None
        readers = [asyncio.create_task(_pump(process.stdout, "stdout", output)),
                   asyncio.create_task(_pump(process.stderr, "stderr", output))]
        spare = Spare(kind, process, claim_w, prepared.cgroup, prepared.cleanup, output, readers)
        self._starting.discard(kind)
        self._ready[kind] = spare
        asyncio.get_running_loop().call_later(self.idle_seconds, self._expire, kind, spare)

    def _not_started(self, kind: str, claim_w: int, prepared: Prepared | None, exc: Exception) -> None:
        log.warning("could not start a spare sandbox: %s", exc)
        os.close(claim_w)
        if prepared is not None:
            if prepared.cgroup is not None:
                prepared.cgroup.destroy()
            prepared.cleanup()
        self._starting.discard(kind)

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
        self._background(self._reap(spare))

    def _background(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
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
        await asyncio.to_thread(spare.cleanup)

    async def close(self) -> None:
        """End every spare, those still starting too."""
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        for kind in list(self._ready):
            self._discard(self._ready.pop(kind))
        await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
