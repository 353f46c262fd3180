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
container of a kind starts the ordinary way (there is no spare for it yet). The pool itself
(kinds, the claim pipe, replenishing, ending) is spare_pool.py's, shared with sandbox nodes
(ray/node_spares.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ..base import ContainerHandle, ContainerSpec, OutputSink
from ..cgroups import Cgroup, CgroupLimits
from .bwrap import SandboxSpec
from .spare_pool import Prepared, SparePool, kind_key, sandbox_kind_parts

if TYPE_CHECKING:
    from .runtime import SandboxRuntime


def spares_can_serve(spec: ContainerSpec) -> bool:
    """Whether a spare can become this container (no per-container volumes or GPUs)."""
    return not spec.volumes and not spec.gpu_indices


class Spares:
    """The spare sandboxes of one sandbox runtime."""

    def __init__(self, runtime: "SandboxRuntime", limit: int) -> None:
        self.runtime = runtime
        self.limit = limit
        self.pool = SparePool(limit)

    def claim(self, kind: str, spec: ContainerSpec, sandbox: SandboxSpec,
              on_output: OutputSink) -> ContainerHandle | None:
        """Make the waiting spare of `kind` (`kind_of(spec)`) this container (None when there is none)."""
        from .runtime import SandboxHandle

        claim = {"env": dict(sandbox.env), "cwd": sandbox.cwd, "module": spec.entry_module}
        spare = self.pool.take(kind, claim, on_output)
        if spare is None:
            return None
        return SandboxHandle(spare.process, spare.readers, spare.cgroup, spec.memory_mb, cleanup=spare.cleanup)

    def kind_of(self, spec: ContainerSpec) -> str:
        """What a spare for `spec`'s container must have been started with."""
        sandbox = self.runtime.sandbox_spec(spec, self.runtime.scratch_root / "kind", spare_fd=0)
        return kind_key({**sandbox_kind_parts(sandbox), "cpu": spec.cpu, "memory": spec.memory_mb})

    def replenish(self, kind: str, spec: ContainerSpec) -> None:
        """Start a spare of `kind` (`kind_of(spec)`) in the background unless one waits or is starting."""

        async def prepare(spare_id: str, claim_fd: int) -> Prepared:
            scratch = self.runtime.scratch_root / spare_id
            sandbox = self.runtime.sandbox_spec(spec, scratch, spare_fd=claim_fd)
            cgroup = None
            if spec.memory_mb is not None or spec.cpu is not None:  # made with the spare
                cgroup = Cgroup.create(spare_id, CgroupLimits(memory_mb=spec.memory_mb, cpu=spec.cpu))
            return Prepared(sandbox, cgroup, cleanup=lambda: _remove(scratch))

        self.pool.replenish(kind, prepare)

    async def close(self) -> None:
        """End every spare (the server is stopping), those still starting too."""
        await self.pool.close()


def _remove(scratch: Path) -> None:
    shutil.rmtree(scratch, ignore_errors=True)
