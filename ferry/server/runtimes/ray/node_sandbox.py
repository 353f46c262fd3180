"""The sandbox runtime on a Ray node (the ray runtime, on the node): a container in bubblewrap
over its image's layers, as isolated as the sandbox runtime makes it on one machine (its own
user, PID, IPC, UTS, mount and network namespaces; root inside is the shifted host id; outbound
network through pasta, never the node's loopback; cpu=/memory= as cgroup limits).

    which runtime   `node_runtime(setting)`: FERRY_NODE_RUNTIME (the control plane's) and what
                    the node has: a sandbox where the agent is root and bubblewrap and pasta
                    are installed (`auto`, `sandbox`), else the process runtime (`auto`,
                    `process`); `sandbox` on a node without them fails the start naming what
                    to install. A GPU container is a sandbox where, besides, each GPU Ray placed
                    on it has its device node (`/dev/nvidia<id>`): it gets those devices and the
                    node's driver bound in, as on one machine (sandbox/gpu.py)
    the image       its layers, unpacked in the node's cache (node_layers.py), read-only under a
                    writable layer in `$FERRY_NODE_CACHE/sandboxes/<agent pid>-<container id>`
                    (deleted when the container ends, or, if its agent was killed, by the next
                    sandbox started on the node)
    the control plane   only through `/run/ferry/control.sock`: a Unix socket of the agent,
                    bound in, that carries each connection's bytes to the control plane's
                    advertised address; where the server serves TLS the container speaks TLS
                    over it (`ferry+tls+unix://`, the server's certificate pinned), end to end;
                    it authenticates with its own credential, as on one machine
    its code        fetched by the container itself, over that socket, into its writable layer

The second and later containers of a kind on a node become a spare sandbox the agent started
ahead (node_spares.py), built by the same `sandbox_spec` without the container's own variables.

The container dies with its agent: bubblewrap runs with --die-with-parent, whose parent is the
agent's process (the launcher execs its way to bubblewrap, see sandbox/bwrap.py), and a
launcher still setting up reads end-of-file on its "go" pipe and exits.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import ferry

from ...._protocol import TCP, TLS, TLS_UNIX, UNIX, parse_address
from ....exception import ExecutionError, InvalidError
from ..base import gpu_environment
from ..cgroups import Cgroup, CgroupLimits, cgroups_unavailable_reason
from ..sandbox.bwrap import DEFAULT_PATH, BindMount, SandboxSpec, check_sandbox_support, launch_async
from ..sandbox.gpu import gpu_access
from ..sandbox.ids import chown_to_sandbox_root, ensure_shifted
from ..sandbox.network import pasta_unavailable_reason
from .node_layers import NodeLayers

NODE_RUNTIMES = ("auto", "sandbox", "process")
CONTAINER_HOME = "/var/lib/ferry"
FERRY_PACKAGE_DIR = "/opt/ferry"
CONTROL_SOCKET = "/run/ferry/control.sock"
SPARE_MODULE = "ferry._container.spare"
RELAY_BUFFER = 1 << 16


@functools.cache
def sandbox_unavailable_reason() -> str | None:
    """Why this node cannot run sandboxes (not root, bubblewrap or pasta missing), or None."""
    try:
        check_sandbox_support()
    except ExecutionError as exc:
        return str(exc)
    return pasta_unavailable_reason()


def gpu_devices_reason(gpu_ids: Sequence[object], dev_root: Path = Path("/dev")) -> str | None:
    """Why a sandbox on this node cannot be given the GPUs Ray calls `gpu_ids` (`ray.get_gpu_ids()`
    of a container's agent, or a node's every GPU), or None: each must be an index whose device
    node (`/dev/nvidia<index>`) exists, as an NVIDIA driver makes them."""
    if not gpu_ids:
        return "Ray placed no GPU device on it"
    for gpu_id in gpu_ids:
        if not str(gpu_id).isdigit():
            return f"Ray names its GPU {gpu_id!r}, not by index, so its device node is unknown"
        node = dev_root / f"nvidia{gpu_id}"
        if not node.exists():
            return (f"this node has no {node} for GPU {gpu_id} (Ray's id): its GPUs are declared to Ray "
                    "(e.g. with --num-gpus) but no NVIDIA driver shows them")
    return None


def why_no_sandbox(gpu_ids: Sequence[object] | None = None) -> str | None:
    """Why a container holding the GPUs Ray calls `gpu_ids` (None: no GPU) cannot run in a
    sandbox on this node, or None: the node's tools, then its GPUs' device nodes, bound in
    (sandbox/gpu.py)."""
    reason = sandbox_unavailable_reason()
    if reason is None and gpu_ids is not None:
        reason = gpu_devices_reason(gpu_ids)
    return reason


def node_runtime(setting: str, gpu_ids: Sequence[object] | None = None) -> dict[str, Any]:
    """`{"runtime": "sandbox" | "process", "why": ...}` for a container on this node under
    FERRY_NODE_RUNTIME=`setting`, holding the GPUs Ray calls `gpu_ids` (None: no GPU); `why`
    says why an `auto` node runs it as a process. Raises InvalidError where `sandbox` is asked
    and this node cannot."""
    if setting not in NODE_RUNTIMES:
        raise InvalidError(f"FERRY_NODE_RUNTIME={setting!r}: use one of {', '.join(NODE_RUNTIMES)}.")
    if setting == "process":
        return {"runtime": "process", "why": None}
    reason = why_no_sandbox(gpu_ids)
    if reason is None:
        return {"runtime": "sandbox", "why": None}
    if setting == "sandbox":
        raise InvalidError(f"FERRY_NODE_RUNTIME=sandbox, but this node cannot run this container in a sandbox: "
                           f"{reason}")
    return {"runtime": "process", "why": reason}


class ControlRelay:
    """A Unix socket whose connections' bytes are carried to the control plane at `server_url`
    and back (TLS, where the server serves it, is the container's own, end to end)."""

    def __init__(self, path: Path, server_url: str) -> None:
        self.path = path
        self.url = server_url
        self.address = parse_address(server_url)
        self._server: asyncio.base_events.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        if self.address.scheme not in (TCP, TLS):
            raise InvalidError(f"A sandbox node reaches the control plane over TCP; {self.url} is not a TCP address "
                               "(set FERRY_ADVERTISE_URL to one the nodes reach).")
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        os.chmod(self.path, 0o666)  # root inside the sandbox is an unprivileged host id

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(self.address.host, self.address.port)
        except OSError:  # the container sees its connection closed
            writer.close()
            self._tasks.discard(task)
            return
        try:
            await asyncio.gather(_copy(reader, up_writer), _copy(up_reader, writer))
        finally:
            for side in (writer, up_writer):
                side.close()
            self._tasks.discard(task)

    def close(self) -> None:
        """Stop accepting and end every carried connection (callable from any thread)."""
        if self._loop is None or self._server is None:
            return

        def stop() -> None:
            assert self._server is not None
            self._server.close()
            for task in list(self._tasks):
                task.cancel()

        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(stop)


async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(RELAY_BUFFER):
            sink.write(data)
            await sink.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        if sink.can_write_eof():
            try:
                sink.write_eof()
            except (OSError, RuntimeError):
                pass


def remove_leftovers(root: Path) -> list[Path]:
    """Remove the writable layers (`<agent pid>-<container id>`) of containers whose agent is
    gone (killed: it could not clean up); returns them."""
    removed = []
    for entry in root.iterdir() if root.is_dir() else []:
        pid = entry.name.partition("-")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        except PermissionError:
            pass
    return removed


@dataclass
class Started:
    """A sandbox started by `start_sandbox` (or a spare claimed, node_spares.py): its launcher,
    its cgroup (the caller destroys it), `cleanup`, which ends its relay and removes its
    writable layer once it has ended, and, for a spare, the tasks already reading its output."""

    process: asyncio.subprocess.Process
    cgroup: Cgroup | None
    cleanup: Callable[[], None]
    readers: list[asyncio.Task] | None = None


def _binds_of_mounts(manifest: dict[str, Any], cache: Path) -> list[BindMount]:
    """add_local_* files, written once per content under `$FERRY_NODE_CACHE/mounts` (from the
    files the control plane sent) and bound read-only as the sandbox runtime binds them."""
    from ...images.files import materialise_mount
    from .node_images import NodeImages

    images = NodeImages(cache)
    binds: list[BindMount] = []
    for mount in manifest.get("mounts") or []:
        directory = materialise_mount(mount, images, images.mounts)
        if mount["kind"] == "dir":
            binds.append(BindMount(directory, mount["remote_path"]))
        elif mount["kind"] == "file":
            binds.append(BindMount(next(iter(directory.iterdir())), mount["remote_path"]))
        else:
            binds += [BindMount(entry, f"{mount['remote_path'].rstrip('/')}/{entry.name}")
                      for entry in sorted(directory.iterdir())]
    return binds


def container_env(manifest: dict[str, Any], launch: dict[str, Any], node_id: str, *,
                  spare_fd: int | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of `launch`'s container in its sandbox; with `spare_fd`, of a spare for
    such containers (node_spares.py): without the container's own variables (its ids, secrets
    and credential, which its claim brings), waiting on `spare_fd` for that claim."""
    tls = parse_address(launch["server_url"]).tls
    env = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8", "HOME": "/root", **manifest["env"]}
    if spare_fd is None:
        env.update(launch["env"])
    env.update(extra or {})
    pythonpath = [FERRY_PACKAGE_DIR, "/root", *filter(None, manifest["env"].get("PYTHONPATH", "").split(":"))]
    env.update({
        "PYTHONPATH": ":".join(dict.fromkeys(pythonpath)),
        "PYTHONUNBUFFERED": "1",
        "FERRY_HOME": CONTAINER_HOME,
        "FERRY_SERVER_URL": f"{TLS_UNIX if tls else UNIX}://{CONTROL_SOCKET}",
        "FERRY_NODE_ID": node_id,
    })
    if spare_fd is None:
        env.update({"FERRY_CONTAINER_ID": launch["container_id"], "FERRY_FUNCTION_ID": launch["function_id"]})
    else:
        env["FERRY_SPARE_FD"] = str(spare_fd)
    if tls:  # the container's TLS, end to end, pinned to the server's certificate
        env["FERRY_TLS_FINGERPRINT"] = launch.get("tls_fingerprint") or ""
    return env


async def sandbox_spec(launch: dict[str, Any], cache: Path, node_id: str, scratch: Path, *,
                       spare_fd: int | None = None, binds: tuple[BindMount, ...] = (),
                       env: dict[str, str] | None = None) -> SandboxSpec:
    """The sandbox of `launch`'s container (or, with `spare_fd`, of a spare for it) whose
    writable layer and relay socket are in `scratch`; `binds` and `env` are its volumes'. A
    container holding GPUs (`gpu_indices`: Ray's ids of its devices) gets their device nodes and
    the node's driver, nothing else (sandbox/gpu.py)."""
    manifest = launch["sandbox"]
    layers = await asyncio.to_thread(NodeLayers(cache).paths, manifest)
    mounts = [BindMount(Path(ferry.__file__).parent, f"{FERRY_PACKAGE_DIR}/ferry")]
    mounts += await asyncio.to_thread(_binds_of_mounts, manifest, cache)
    mounts += [*binds, BindMount(scratch / "control.sock", CONTROL_SOCKET)]
    module = (launch.get("entry_module") or "ferry._container") if spare_fd is None else SPARE_MODULE
    environment = container_env(manifest, launch, node_id, spare_fd=spare_fd, extra=env)
    devices: list[str] = []
    if launch.get("gpu_indices"):
        access = await asyncio.to_thread(gpu_access, tuple(launch["gpu_indices"]))
        devices = access.devices
        mounts += [BindMount(host, inside) for host, inside in access.binds]
        environment.update(access.environment(environment["PATH"]))
        environment.update(gpu_environment(launch["gpu_indices"], launch.get("gpu_type")))
    return SandboxSpec(
        layers=layers, argv=[manifest["python"], "-m", module],
        upper_dir=scratch / "upper", work_dir=scratch / "work", binds=mounts, env=environment,
        devices=devices,
        cwd=manifest.get("workdir") or "/root", network="none" if launch.get("block_network") else "pasta",
        network_ready_env=None if launch.get("block_network") else "FERRY_NETWORK_READY_FD",
        inherit_fds=() if spare_fd is None else (spare_fd,),
    )


def limits_cgroup(name: str, launch: dict[str, Any], node_id: str,
                  note: Callable[[tuple[str, str]], None]) -> Cgroup | None:
    """A cgroup `name` with the launch's cpu=/memory= limits, where this node can make one (else
    None, and `note` says that the limits only placed the container)."""
    cpu, memory_mb = launch.get("cpu"), launch.get("memory_mb")
    if cpu is None and memory_mb is None:
        return None
    if cgroups_unavailable_reason() is not None:
        note(unenforced_limits(node_id))
        return None
    return Cgroup.create(name, CgroupLimits(memory_mb=memory_mb, cpu=cpu))


def unenforced_limits(node_id: str) -> tuple[str, str]:
    """The container's log line saying that its cpu=/memory= limits are not enforced here."""
    return ("stderr", f"ferry: cpu=/memory= placed this container on node {node_id} "
                      f"but are not enforced there: {cgroups_unavailable_reason()}\n")


async def open_scratch(cache: Path, name: str, server_url: str) -> tuple[Path, ControlRelay]:
    """A sandbox's scratch directory `$FERRY_NODE_CACHE/sandboxes/<agent pid>-<name>` (those of
    killed agents removed first) and its relay, not yet started."""
    await asyncio.to_thread(remove_leftovers, cache / "sandboxes")
    scratch = cache / "sandboxes" / f"{os.getpid()}-{name}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    return scratch, ControlRelay(scratch / "control.sock", server_url)


async def start_sandbox(launch: dict[str, Any], cache: Path, node_id: str,
                        note: Callable[[tuple[str, str]], None]) -> Started:
    """Start the container of `launch` in a sandbox over the layers of `launch["sandbox"]`
    (node_layers.py's manifest, its layers already in the node's cache); `note` gets lines for
    the container's log."""
    from ...volume_mounts import cache_dir, prepare_sandbox

    scratch, relay = await open_scratch(cache, launch["container_id"], launch["server_url"])
    cgroup: Cgroup | None = None

    def cleanup() -> None:  # (the agent ends the cgroup, once it has read whether it OOM-killed)
        relay.close()
        shutil.rmtree(scratch, ignore_errors=True)

    try:
        binds: list[BindMount] = []
        env: dict[str, str] = {}
        if launch.get("volumes"):  # views in the scratch directory, the node's chunk cache (volume_mounts.py)
            volumes = prepare_sandbox(tuple(launch["volumes"]), scratch / "volumes", home=cache / "home")
            binds += [BindMount(*bind) for bind in volumes.binds]
            env.update(volumes.env)
            for host, _, read_only in volumes.binds:  # written by root inside (its host id)
                if not read_only and host.parent == scratch / "volumes":
                    chown_to_sandbox_root(host)
            await asyncio.to_thread(ensure_shifted, cache_dir(cache / "home"))  # chunks written before, as host root
        spec = await sandbox_spec(launch, cache, node_id, scratch, binds=tuple(binds), env=env)
        await relay.start()
        cgroup = limits_cgroup(launch["container_id"], launch, node_id, note)
        process = await launch_async(spec, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                     cgroup=cgroup)
    except BaseException as exc:
        await asyncio.to_thread(cleanup)
        if cgroup is not None:
            cgroup.destroy()
        if isinstance(exc, (OSError, InvalidError, ExecutionError)):
            raise RuntimeError(f"could not start a sandbox on node {node_id}: {exc}") from None
        raise
    return Started(process, cgroup, cleanup)
