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
    the network       the host's (outbound access as on the reference platform; the control
                      plane at 127.0.0.1), and the host's /etc/resolv.conf
and nothing else of the host. It has its own PID, IPC, UTS and mount namespaces, runs as
root inside with Docker's default capabilities, and `cpu=`/`memory=` are cgroup limits.
It runs `<image python> -m ferry._container` with cwd = the image's workdir (default /root).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path

import ferry

from ....exception import InvalidError
from ..base import ContainerHandle, ContainerSpec, OutputSink, Runtime
from ..cgroups import Cgroup, CgroupLimits, cgroups_unavailable_reason
from ...volume_mounts import prepare_sandbox
from ..process import ProcessHandle, _pump
from .bwrap import DEFAULT_PATH, BindMount, SandboxSpec, launch_async, signal_command
from .gpu import BIN_DIR as GPU_BIN_DIR
from .gpu import gpu_access

CONTAINER_HOME = "/var/lib/ferry"
FERRY_PACKAGE_DIR = "/opt/ferry"
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
        if scratch_root.is_dir():  # writable layers of containers of a server that crashed
            for leftover in scratch_root.iterdir():
                shutil.rmtree(leftover, ignore_errors=True)

    def check(self, spec: ContainerSpec) -> None:
        if spec.memory_mb is not None or spec.cpu is not None:
            reason = cgroups_unavailable_reason()
            if reason is not None:
                raise InvalidError(f"This server cannot enforce cpu=/memory= limits: {reason}")

    def sandbox_spec(self, spec: ContainerSpec, scratch: Path) -> SandboxSpec:
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
        env.update({k: v for k, v in os.environ.items() if k.startswith("FERRY_") and k not in _NOT_PASSED})
        env.update(image.env)
        env.update(spec.env)
        if spec.volumes:  # views in the scratch directory, bound at their paths (server/volume_mounts.py)
            volumes = prepare_sandbox(spec.volumes, scratch / "volumes")
            binds += [BindMount(*bind) for bind in volumes.binds]
            env.update(volumes.env)
        devices: list[str] = []
        if spec.gpu_indices:  # its own GPUs' device nodes and the host's driver, nothing else
            access = gpu_access(spec.gpu_indices)
            devices = access.devices
            binds += [BindMount(host, inside) for host, inside in access.binds]
            env.update(access.env)
            env["PATH"] = f"{GPU_BIN_DIR}:{env.get('PATH', DEFAULT_PATH)}"
            env.update(spec.gpu_env())
        pythonpath = [FERRY_PACKAGE_DIR, "/root", *filter(None, image.env.get("PYTHONPATH", "").split(":"))]
        env.update({
            "PYTHONPATH": ":".join(dict.fromkeys(pythonpath)),
            "PYTHONUNBUFFERED": "1",
            "FERRY_HOME": CONTAINER_HOME,
            "FERRY_SERVER_URL": spec.server_url,
            "FERRY_CONTAINER_ID": spec.container_id,
            "FERRY_FUNCTION_ID": spec.function_id,
        })
        return SandboxSpec(
            layers=image.layers, argv=[image.python, "-m", "ferry._container"],
            upper_dir=scratch / "upper", work_dir=scratch / "work", binds=binds, env=env,
            cwd=image.workdir or "/root", devices=devices,
        )

    async def start(self, spec: ContainerSpec, on_output: OutputSink) -> ContainerHandle:
        self.check(spec)
        scratch = self.scratch_root / spec.container_id
        try:
            sandbox = self.sandbox_spec(spec, scratch)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        cgroup = None
        if spec.memory_mb is not None or spec.cpu is not None:
            cgroup = Cgroup.create(spec.container_id, CgroupLimits(memory_mb=spec.memory_mb, cpu=spec.cpu))
        try:
            process = await launch_async(sandbox, stdout=asyncio.subprocess.PIPE,
                                         stderr=asyncio.subprocess.PIPE, cgroup=cgroup)
        except (OSError, InvalidError) as exc:
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
