"""Memory snapshots on the sandbox runtime: a template *sandbox* per snapshot key, whose
children isolate themselves before they become containers.

The template is launched like any container of its function (same launcher, layers, binds,
user namespace, pasta network; a cgroup with the function's limits) but without secrets,
credential, container ids, GPUs or volumes, and with CAP_SYS_ADMIN inside its own user
namespace so that it can give its children namespaces of their own. It runs the zygote
(zygote_process.py) with the snapshot's preparation (ferry/_container/snapshot.py): imports,
class instance, `snap=True` hooks; then freezes its root read-only and tries isolating one
child, so that a kernel that refuses something fails the snapshot (containers then start the
ordinary way, saying why once).

A container from the snapshot:

    server                                     template's child (ferry/_container/isolate.py)
      mkdir layers/ID/{upper,work,root}          (the template's host directory, bound rw)
      spawn(isolate=plan, channel) ──────────►   fork; fork into a user namespace of its own
                                                 (the first child maps its ids, then waits);
                                                 own session; unshare(mount, net, pid, IPC, UTS)
      ◄── "h" with SCM_CREDENTIALS: its host pid
      move it into the container's cgroup (block_network=True: bring its loopback up)
      env (ids, credential, secrets), cwd ───►   pid 1: overlay root (the frozen template root
                                                 under layers/ID), own /tmp /dev /proc, the
                                                 template's binds; pivot_root; Docker's default
                                                 capabilities, no_new_privs; fork the container
      connect pasta to its network namespace     (which imports nothing more: it waits for the
      "n" ────────────────────────────────────►   network before any user code runs)

Its pid (the server's killpg target) is the host pid of the process in the new namespaces;
the template reaps its child and reports its exit status, which mirrors the container's (a
signal too); OOM kills are read from
its cgroup like any sandbox's. Its writable layer is removed once it has ended.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
import struct
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ferry

from .... import _config
from ....exception import ExecutionError, InvalidError
from ..base import ContainerHandle, ContainerSpec, OutputSink
from ..cgroups import Cgroup, CgroupLimits
from ..process import ForkedProcess, ProcessHandle, _pipe_reader, _pump
from ..snapshots import SnapshotTemplates, notice
from ..zygote import Zygote, ZygoteError
from .bwrap import DEFAULT_CAPABILITIES, BindMount, SandboxSpec, launch_async
from .ids import chown_to_sandbox_root
from .network import PastaNetwork, resolv_conf

if TYPE_CHECKING:
    from .runtime import SandboxRuntime

log = logging.getLogger("ferry.server")

TEMPLATE_CAPABILITIES = (*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN")
LAYERS = "/run/ferry/layers"          # inside the template: the containers' writable layers
REQUEST = "/run/ferry/snapshot.json"  # inside the template: what it prepares
LOWER = "/run/ferry/frozen-root"      # inside the template: its root, read-only, without mounts
_EXCLUDE = [LAYERS, REQUEST, LOWER]   # template-only mounts, not bound into containers
HELLO_TIMEOUT = 30.0
_PROBE = "probe"
_CLONE_NEWNET, _SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x40000000, 0x8913, 0x8914, 0x1


def why_not(spec: ContainerSpec) -> str:
    """Why a container of `spec` is not started from a snapshot on this runtime ("" if it is)."""
    assert spec.snapshot is not None
    if spec.snapshot.get("pickled"):
        return ("a serialized=True function (or one defined inside another) has no module for a "
                "snapshot to import")
    if spec.volumes:
        return "containers with volumes are not started from a snapshot on the sandbox runtime"
    if spec.gpu_indices:
        return ("containers with GPUs are not started from a snapshot on the sandbox runtime (its "
                "template has no GPU devices to hand on)")
    return ""


class SandboxTemplate(Zygote):
    """A snapshot's template: a zygote in a sandbox (see the module docstring)."""

    def __init__(self, sandbox: SandboxSpec, scratch: Path, limits: CgroupLimits | None,
                 request: Path, log_path: Path) -> None:
        super().__init__(sandbox.argv[0], {}, snapshot=Path(REQUEST), log_path=log_path)
        self.pids_are_ours = False
        self.sandbox = dataclasses.replace(
            sandbox, binds=[*sandbox.binds, BindMount(scratch / "layers", LAYERS, False),
                            BindMount(request, REQUEST)])
        self.scratch = scratch
        self.layers = scratch / "layers"
        self._limits = limits
        self._cgroup: Cgroup | None = None

    async def _launch(self, argv: list[str], fd: int, output: Any) -> Any:
        """(Failures are OSErrors: the zygote then gives up, and containers start the ordinary way.)"""
        try:
            self.layers.mkdir(parents=True, exist_ok=True)
            new_layer(self.layers / _PROBE)
            if self._limits is not None:
                self._cgroup = Cgroup.create(self.scratch.name, self._limits)
            copy = os.dup(fd)  # the launch closes what it hands on; the zygote closes `fd`
            argv = [str(copy) if arg == str(fd) else arg for arg in argv]
            spec = dataclasses.replace(self.sandbox, argv=argv, upper_dir=self.scratch / "upper",
                                       work_dir=self.scratch / "work", inherit_fds=(copy,))
            return await launch_async(spec, stdout=output, stderr=output, cgroup=self._cgroup)
        except (InvalidError, ExecutionError) as exc:
            raise OSError(str(exc)) from None

    async def stop(self) -> None:
        await super().stop()
        if self._cgroup is not None:
            self._cgroup.destroy()
        await asyncio.to_thread(shutil.rmtree, self.scratch, True)


def new_layer(path: Path) -> None:
    """A writable layer's directories, owned by root inside the sandboxes."""
    for name in ("upper", "work", "root"):
        (path / name).mkdir(parents=True, exist_ok=True)
        chown_to_sandbox_root(path / name)
    chown_to_sandbox_root(path)


class SandboxSnapshots:
    """The snapshot templates of one sandbox runtime, and the containers started from them."""

    def __init__(self, runtime: "SandboxRuntime") -> None:
        self.runtime = runtime
        self.templates = SnapshotTemplates(_config.home() / "snapshots")

    async def start(self, spec: ContainerSpec, sandbox: SandboxSpec,
                    on_output: OutputSink) -> ContainerHandle | None:
        """Start `spec`'s container (whose ordinary sandbox is `sandbox`) from its snapshot, or
        return None for the ordinary start (the reason is in its output, once per snapshot)."""
        assert spec.snapshot is not None
        reason = why_not(spec)
        template_sandbox = self._template_sandbox(spec) if not reason else None
        if template_sandbox is None:  # (once per function and reason)
            key = hashlib.sha256(json.dumps([spec.snapshot, reason], default=str).encode()).hexdigest()[:24]
        else:
            key = _key(spec, template_sandbox)
        scratch = self.runtime.scratch_root / f"snapshot-{key[:16]}-{secrets.token_hex(4)}"  # (this template's)
        limits = (CgroupLimits(memory_mb=spec.memory_mb, cpu=spec.cpu)
                  if spec.memory_mb is not None or spec.cpu is not None else None)

        def make(request: Path, log_path: Path) -> Zygote:
            assert template_sandbox is not None
            return SandboxTemplate(template_sandbox, scratch, limits, request, log_path)

        code_dir = next((b.container_path for b in (template_sandbox.binds if template_sandbox else ())
                         if b.host_path == spec.code_dir), None)
        request = {"definition": spec.snapshot["definition"], "params": spec.snapshot.get("params"),
                   "code_dir": code_dir,
                   "isolate": {"lower": LOWER, "probe_layer": f"{LAYERS}/{_PROBE}", "exclude": _EXCLUDE}}
        template, said = await self.templates.template(key, reason, request, make)
        if said:
            on_output("stderr", notice(said))
        if template is None:
            return None
        assert isinstance(template, SandboxTemplate)
        try:
            return await _spawn(template, spec, sandbox, on_output)
        except (OSError, ZygoteError, asyncio.TimeoutError) as exc:
            log.warning("container %s not started from its snapshot: %s", spec.container_id, exc)
            said = self.templates.tell_once(key, f"starting a container from the snapshot failed: {exc}")
            if said:
                on_output("stderr", notice(said))
            return None

    def _template_sandbox(self, spec: ContainerSpec) -> SandboxSpec:
        """The template's sandbox: the container's, without what only a container gets."""
        base = self.runtime.sandbox_spec(spec, self.runtime.scratch_root / "template", spare_fd=0)
        env = {k: v for k, v in base.env.items() if k != "FERRY_SPARE_FD"}
        env.update({"CUDA_VISIBLE_DEVICES": "", "NVIDIA_VISIBLE_DEVICES": "void", "FERRY_IS_CONTAINER": "1"})
        return dataclasses.replace(base, argv=[base.argv[0]], env=env, upper_dir=None, work_dir=None,
                                   capabilities=TEMPLATE_CAPABILITIES, network_ready_env=None, inherit_fds=())

    async def close(self) -> None:
        await self.templates.close()


def _key(spec: ContainerSpec, template: SandboxSpec) -> str:
    """What a snapshot depends on: the template's sandbox (layers, binds, environment, working
    directory, network), the function or class and its parameters, limits, Ferry's version."""
    assert spec.snapshot is not None
    parts = {"layers": [str(p) for p in template.layers], "argv": list(template.argv),
             "binds": [list(map(str, b)) for b in template.binds], "env": dict(template.env),
             "cwd": template.cwd, "network": template.network, "snapshot": spec.snapshot,
             "cpu": spec.cpu, "memory": spec.memory_mb, "ferry": ferry.__version__}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


async def _spawn(template: SandboxTemplate, spec: ContainerSpec, sandbox: SandboxSpec,
                 on_output: OutputSink) -> ContainerHandle:
    """Fork, isolate and start one container from `template` (see the module docstring)."""
    layer = template.layers / spec.container_id
    await asyncio.to_thread(new_layer, layer)
    cgroup = None
    if spec.memory_mb is not None or spec.cpu is not None:
        cgroup = Cgroup.create(spec.container_id, CgroupLimits(memory_mb=spec.memory_mb, cpu=spec.cpu))
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    ours.setblocking(False)
    plan = {"lower": LOWER, "layer": f"{LAYERS}/{spec.container_id}", "exclude": _EXCLUDE,
            "capabilities": list(sandbox.capabilities)}
    network: PastaNetwork | None = None
    readers: list[asyncio.Task] = []
    host_pid = 0

    def clean_up() -> None:
        if network is not None:
            network.close()
        if cgroup is not None:
            cgroup.destroy()
        shutil.rmtree(layer, ignore_errors=True)

    try:
        try:
            _, exited, out_fd, err_fd = await template.spawn({}, None, [], spec.entry_module,
                                                             isolate=plan, channel=theirs.fileno())
        finally:
            theirs.close()
        readers = [asyncio.create_task(_pump(await _pipe_reader(fd), name, on_output))
                   for fd, name in ((out_fd, "stdout"), (err_fd, "stderr"))]
        host_pid = await asyncio.wait_for(_sender_pid(ours), HELLO_TIMEOUT)
        if cgroup is not None:
            cgroup.add_pid(host_pid)  # before it forks anything of the container
        pasta = sandbox.network == "pasta"
        if not pasta:  # loopback only (pasta brings it up itself)
            await _loopback_up(host_pid)
        # its environment now; with pasta, the container starts while pasta connects and
        # waits for one more byte before any user code (as sandboxes do: network_ready_env)
        claim = json.dumps({"env": {**sandbox.env, "PWD": sandbox.cwd}, "cwd": sandbox.cwd,
                            "network_ready": pasta}).encode()
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(ours, struct.pack("!I", len(claim)) + claim)
        if pasta:
            network = await PastaNetwork.start_async(host_pid, resolv_conf()[1])
            await loop.sock_sendall(ours, b"n")
    except BaseException:
        ours.close()  # a child still waiting for its claim ends on its own
        if host_pid:
            _kill_group(host_pid)
        for reader in readers:
            reader.cancel()
        await asyncio.to_thread(clean_up)
        raise
    ours.close()
    return ProcessHandle(ForkedProcess(host_pid, exited), readers, cgroup, spec.memory_mb, clean_up)


async def _sender_pid(sock: socket.socket) -> int:
    """The host pid of the process that wrote the first byte on `sock` (SO_PASSCRED)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            data, ancillary, _, _ = sock.recvmsg(1, socket.CMSG_SPACE(struct.calcsize("iII")))
        except BlockingIOError:
            readable = loop.create_future()
            loop.add_reader(sock.fileno(), lambda: readable.done() or readable.set_result(None))
            try:
                await readable
            finally:
                loop.remove_reader(sock.fileno())
            continue
        if not data:
            raise OSError("the template's child ended before isolating itself (its output says why)")
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                return struct.unpack("iII", payload[:12])[0]
        raise OSError("the template's child sent no credentials")


def _kill_group(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, 9)
        except OSError:
            pass


async def _loopback_up(pid: int) -> None:
    """Bring up `lo` in the network namespace of `pid`, from a thread of its own that enters
    that namespace (a thread's network namespace is its own; the thread ends after)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def work() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "entering the container's network namespace")
            finally:
                os.close(fd)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                request = struct.pack("16sH22x", b"lo", 0)
                flags = struct.unpack("16sH22x", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
                fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting start
            loop.call_soon_threadsafe(lambda error=exc: done.done() or done.set_exception(error))
        else:
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

    threading.Thread(target=work, name=f"sandbox-loopback-{pid}", daemon=True).start()
    await done
