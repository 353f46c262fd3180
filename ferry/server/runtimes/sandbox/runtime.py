"""The `sandbox` runtime: each container is a bubblewrap sandbox over its image's layers.

A container sees:
    /                 the image's layers (read-only) under a private writable layer in
                      `$FERRY_HOME/sandbox/<container id>`, deleted when the container ends
    /proc, /dev, /tmp its own (PID namespace; minimal /dev; a private tmpfs)
    /opt/ferry/ferry  Ferry's own package, read-only (on PYTHONPATH)
    /var/lib/ferry/mounts/<digest>   the uploaded source code, read-only
    add_local_* paths the mounted files, read-only (python sources under /root, on PYTHONPATH)
    volumes=          each volume's view at its path (read-only if asked), and again writable at
                      /var/lib/ferry/volumes/N with the host's chunk cache (server/volume_mounts.py)
    /run/ferry/control.sock  the server's Unix socket, its only way to the control plane
                      (FERRY_SERVER_URL=ferry+unix:///run/ferry/control.sock)
    the network       a namespace of its own: outbound access through pasta, never the host's
                      loopback (network.py); loopback only with block_network=True
and nothing else of the host. It has its own user, PID, IPC, UTS, mount and network
namespaces; root inside is an unprivileged host id (ids.py) with Docker's default
capabilities inside its namespaces, and `cpu=`/`memory=` are cgroup limits.
It runs `<image python> -m ferry._container` with cwd = the image's workdir (default /root).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
from pathlib import Path

import ferry

from .... import _config
from ....exception import ExecutionError, InvalidError
from ..base import ContainerHandle, ContainerSpec, OutputSink, Runtime, inherited_environment
from ..cgroups import Cgroup, CgroupLimits, cgroups_unavailable_reason
from ...volume_mounts import prepare_sandbox
from ..process import ProcessHandle, _pump
from .snapshots import SandboxSnapshots
from .spares import Spares, spares_can_serve
from .bwrap import DEFAULT_PATH, BindMount, SandboxSpec, launch_async, signal_command
from .gpu import gpu_access
from .ids import chown_to_sandbox_root, ensure_shifted
from .network import end_leftover_pastas, pasta_unavailable_reason

CONTAINER_HOME = "/var/lib/ferry"
FERRY_PACKAGE_DIR = "/opt/ferry"
CONTROL_SOCKET = "/run/ferry/control.sock"
SPARE_MODULE = "ferry._container.spare"
_NOT_PASSED = {"FERRY_HOME", "FERRY_SERVER_URL", "FERRY_CONTAINER_ID", "FERRY_FUNCTION_ID"}


class SandboxHandle(ProcessHandle):
    """A sandbox's launcher process; its writable layer is removed once it has ended.
    Killing the launcher's group ends the sandbox (bwrap runs with --die-with-parent)."""

    def terminate(self) -> None:
        """SIGTERM to the container's Python (so @exit runs); during setup, to the launcher."""
        if self._process.returncode is not None:
            return
        if not signal_command(self._process.pid, signal.SIGTERM):
            self._signal(signal.SIGTERM)


class SandboxRuntime(Runtime):
    """Containers in bubblewrap sandboxes over image root filesystems (Linux, root)."""

    name = "sandbox"

    def __init__(self, scratch_root: Path) -> None:
        self.scratch_root = scratch_root
        count = int(_config.get("sandbox_spares"))
        self.spares = Spares(self, count) if count > 0 else None
        self._owned: set[Path] = set()  # trees known to be owned by the sandbox ids (ids.py)
        self.snapshots = SandboxSnapshots(self)
        if scratch_root.is_dir():  # writable layers of containers of a server that crashed
            for leftover in scratch_root.iterdir():
                shutil.rmtree(leftover, ignore_errors=True)
        end_leftover_pastas()

    def check(self, spec: ContainerSpec) -> None:
        if spec.memory_mb is not None or spec.cpu is not None:
            reason = cgroups_unavailable_reason()
            if reason is not None:
                raise InvalidError(f"This server cannot enforce cpu=/memory= limits: {reason}")
        if spec.control_socket is None:
            raise InvalidError(
                "The sandbox runtime gives each container a network namespace of its own, so "
                "containers reach the control plane only through the server's Unix socket, and "
                "this server has none (ContainerSpec.control_socket is not set)."
            )
        if not spec.block_network:
            reason = pasta_unavailable_reason()
            if reason is not None:
                raise InvalidError(f"This server cannot give sandbox containers a network: {reason}. "
                                   "(block_network=True containers need no network.)")

    def sandbox_spec(self, spec: ContainerSpec, scratch: Path, *, spare_fd: int | None = None) -> SandboxSpec:
        """The sandbox of `spec`'s container; with `spare_fd`, of a spare for such containers
        (spares.py): everything but what only the container gets (its ids, secrets and
        credential, which its claim brings), waiting on `spare_fd` for that claim."""
        image = spec.image
        if image is None or not image.layers:
            raise InvalidError("The sandbox runtime needs a built image for every container.")
        binds = [BindMount(Path(ferry.__file__).parent, f"{FERRY_PACKAGE_DIR}/ferry")]
        if spec.code_dir is not None:
            binds.append(BindMount(spec.code_dir, f"{CONTAINER_HOME}/mounts/{spec.code_dir.name}"))
        for mount in image.mounts:
            if mount.kind == "dir":
                binds.append(BindMount(mount.host_dir, mount.remote_path))
            elif mount.kind == "file":
                only = next(iter(mount.host_dir.iterdir()))
                binds.append(BindMount(only, mount.remote_path))
            else:
                for entry in sorted(mount.host_dir.iterdir()):
                    binds.append(BindMount(entry, f"{mount.remote_path.rstrip('/')}/{entry.name}"))
        env = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8", "HOME": "/root"}
        env.update({k: v for k, v in inherited_environment().items()
                    if k.startswith("FERRY_") and k not in _NOT_PASSED})
        env.update(image.env)
        if spare_fd is None:
            env.update(spec.env)
        if spec.volumes:  # views in the scratch directory, bound at their paths (server/volume_mounts.py)
            volumes = prepare_sandbox(spec.volumes, scratch / "volumes")
            binds += [BindMount(*bind) for bind in volumes.binds]
            env.update(volumes.env)
            for host, _, read_only in volumes.binds:  # written by root inside (its host id)
                if not read_only and host.parent == scratch / "volumes":
                    chown_to_sandbox_root(host)
        assert spec.control_socket is not None  # check()
        binds.append(BindMount(spec.control_socket, CONTROL_SOCKET))
        devices: list[str] = []
        if spec.gpu_indices:  # its own GPUs' device nodes and the host's driver, nothing else
            access = gpu_access(spec.gpu_indices)
            devices = access.devices
            binds += [BindMount(host, inside) for host, inside in access.binds]
            env.update(access.environment(env.get("PATH", DEFAULT_PATH)))
            env.update(spec.gpu_env())
        pythonpath = [FERRY_PACKAGE_DIR, "/root", *filter(None, image.env.get("PYTHONPATH", "").split(":"))]
        env.update({
            "PYTHONPATH": ":".join(dict.fromkeys(pythonpath)),
            "PYTHONUNBUFFERED": "1",
            "FERRY_HOME": CONTAINER_HOME,
            "FERRY_SERVER_URL": f"ferry+unix://{CONTROL_SOCKET}",
        })
        if spare_fd is None:
            env.update({"FERRY_CONTAINER_ID": spec.container_id, "FERRY_FUNCTION_ID": spec.function_id})
        else:
            env["FERRY_SPARE_FD"] = str(spare_fd)
        module = spec.entry_module if spare_fd is None else SPARE_MODULE
        return SandboxSpec(
            layers=image.layers, argv=[image.python, "-m", module],
            upper_dir=scratch / "upper", work_dir=scratch / "work", binds=binds, env=env,
            cwd=image.workdir or "/root", devices=devices,
            network="none" if spec.block_network else "pasta",
            # Python starts while pasta connects; ferry._container waits for it before user code
            network_ready_env=None if spec.block_network else "FERRY_NETWORK_READY_FD",
            inherit_fds=() if spare_fd is None else (spare_fd,),
        )

    def _unowned_trees(self, spec: ContainerSpec) -> list[Path]:
        """Image layers, mounted files and the chunk cache not yet known to be owned by the
        sandbox ids: those written before sandboxes had user namespaces are shifted once."""
        trees: list[Path] = []
        if spec.image is not None:
            trees += [*spec.image.layers, *(m.host_dir for m in spec.image.mounts)]
        if spec.code_dir is not None:
            trees.append(spec.code_dir)
        if spec.volumes:
            from ...volume_mounts import cache_dir

            trees.append(cache_dir())
        return [tree for tree in trees if tree not in self._owned]

    def _own(self, trees: list[Path]) -> None:
        for tree in trees:
            ensure_shifted(tree)
            self._owned.add(tree)

    async def start(self, spec: ContainerSpec, on_output: OutputSink) -> ContainerHandle:
        self.check(spec)
        scratch = self.scratch_root / spec.container_id
        try:
            sandbox = self.sandbox_spec(spec, scratch)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        unowned = self._unowned_trees(spec)
        if unowned:
            await asyncio.to_thread(self._own, unowned)
        if spec.snapshot is not None:  # enable_memory_snapshot=True: forked from its template
            forked = await self.snapshots.start(spec, sandbox, on_output)
            if forked is not None:
                return forked
        if self.spares is not None and spares_can_serve(spec):  # a sandbox started ahead, if one waits
            kind = self.spares.kind_of(spec)
            claimed = self.spares.claim(kind, spec, sandbox, on_output)
            self.spares.replenish(kind, spec)
            if claimed is not None:
                return claimed
        cgroup = None
        try:
            if spec.memory_mb is not None or spec.cpu is not None:
                cgroup = Cgroup.create(spec.container_id, CgroupLimits(memory_mb=spec.memory_mb, cpu=spec.cpu))
            process = await launch_async(sandbox, stdout=asyncio.subprocess.PIPE,
                                         stderr=asyncio.subprocess.PIPE, cgroup=cgroup)
        except (OSError, InvalidError, ExecutionError) as exc:
            if cgroup is not None:
                cgroup.destroy()
            shutil.rmtree(scratch, ignore_errors=True)
            raise InvalidError(f"Could not start a sandbox: {exc}") from None
        assert process.stdout is not None and process.stderr is not None
        readers = [
            asyncio.create_task(_pump(process.stdout, "stdout", on_output)),
            asyncio.create_task(_pump(process.stderr, "stderr", on_output)),
        ]
        return SandboxHandle(process, readers, cgroup, spec.memory_mb,
                             cleanup=lambda: shutil.rmtree(scratch, ignore_errors=True))

    def snapshots_unavailable(self) -> str | None:
        return None  # snapshots.py: templates are sandboxes whose children isolate themselves

    async def close(self) -> None:
        if self.spares is not None:
            await self.spares.close()
        await self.snapshots.close()
