"""Describe a sandbox (`SandboxSpec`) and launch it with bubblewrap in user and network
namespaces of its own.

The root of a sandbox is an overlayfs: the spec's read-only layers (a base root filesystem,
then one layer per image step) under a writable upper layer (a directory, or a tmpfs thrown
away at exit). bubblewrap 0.8 (Debian 12) has no overlay options (`--overlay-src` came in
0.9), so the overlay is mounted by a tiny bash launcher in a private mount namespace, as host
root, before the sandbox enters its user namespace:

    unshare --mount --propagation private /bin/bash -c '
        echo $$ > <cgroup>/cgroup.procs          # join the cgroup before anything else runs
        mount -t tmpfs ... <mount_dir>/scratch    # only for a tmpfs upper layer
        mount -t overlay ... <mount_dir>/root
        mount --bind <private host path> <mount_dir>/binds/dir-N   # see `staged_binds`
        exec setpriv --reuid=BASE --regid=BASE --clear-groups -- \
             unshare --user [--net] -- /bin/bash -c '
                 printf r >&READY; read go <&GO    # the server writes the id map (and pasta
                 exec bwrap --bind <mount_dir>/root / ...'  # connects the network), then: go

Every container uses the same (empty) host directory `mount_dir`; its mounts exist only in
the container's own mount namespace, so they vanish when the container ends, crashed or not,
and nothing is ever left mounted on the host. The pid that `launch` returns is the launcher,
then bwrap (every stage execs the next), so it is in the cgroup before bwrap or user code
runs, and every process of the container is born inside it.

**User namespace** (ids.py): the launcher becomes the unprivileged host id `SANDBOX_IDS.base`
and creates a user namespace, whose owner that id is; the server, which is root, writes its
map `0 BASE 65536`, so root inside is host uid BASE and host root is unmapped inside. Image
layers are owned by the shifted ids (ids.py), so root inside owns its image. bwrap runs as
root of that namespace and keeps `DEFAULT_CAPABILITIES` (Docker's default set, without
CAP_MKNOD), all of them relative to the sandbox's own namespaces: user code cannot mount,
load modules, reach raw devices, or do anything as host root. bwrap binds host paths as that
unprivileged id, so paths below private directories (the server's state directory is often
0700) are first bound by the launcher, still host root, under `mount_dir/binds`.

**Network** (network.py): `pasta` gives the sandbox a network namespace of its own with
outbound access through pasta and a resolv.conf suited to it; `none` one with loopback only;
`host` keeps the host's (image build steps).
"""

from __future__ import annotations

import asyncio
import os
import re
import select
import shlex
import shutil
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import IO, Any, Final, NamedTuple

from ....exception import ExecutionError, InvalidError
from ..cgroups import Cgroup
from .ids import SANDBOX_IDS, chown_to_sandbox_root
from .network import NETWORKS, Network, PastaNetwork, resolv_conf
from .rootfs import DEFAULT_HOSTNAME

DEFAULT_PATH: Final[str] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_ENV: Final[Mapping[str, str]] = MappingProxyType({"PATH": DEFAULT_PATH, "LANG": "C.UTF-8"})
DEFAULT_MOUNT_DIR: Final[Path] = Path("/run/ferry-sandbox")
DEFAULT_CAPABILITIES: Final[tuple[str, ...]] = (
    "CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP",
    "CAP_SETUID", "CAP_SYS_CHROOT",
)
SETUP_FAILED_EXIT_CODE: Final[int] = 125
"""Exit code of a sandbox whose setup (cgroup, overlay, namespaces) failed; stderr says why."""
SETUP_TIMEOUT: Final[float] = 30.0
"""Seconds the server waits for a launcher to reach its user namespace."""

_LAUNCHER_ENV: Final[Mapping[str, str]] = MappingProxyType(
    {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
)
_OVERLAY_UNSAFE = re.compile(r"[,:\\\n]")
_ENV_NAME = re.compile(r"^[^=\0]+$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_CAPABILITY = re.compile(r"^CAP_[A-Z_]+$")

Redirect = int | IO[Any] | None


class BindMount(NamedTuple):
    """A host path bound into the sandbox; a plain `(host, container, read_only)` tuple works."""

    host_path: Path
    container_path: str
    read_only: bool = True


@dataclass(frozen=True)
class SandboxSpec:
    """One sandboxed process: its root layers, mounts, environment and command.

    `layers` are read-only directories, lowest first (the base root filesystem first).
    Writes go to `upper_dir` (with `work_dir`, an empty directory on the same filesystem),
    or, when both are None, to a tmpfs discarded at exit. `env` is exactly the environment
    (bwrap adds PWD). `network` is "pasta" (a network namespace of its own with outbound
    access through pasta), "none" (loopback only) or "host" (the host's network and DNS, for
    image build steps); see network.py. `devices` are host device
    paths exposed as-is (e.g. /dev/nvidia0). `mount_dir` is an empty host directory the
    launcher mounts over, privately (see the module docstring).

    With `network_ready_env` (pasta only), the command starts while pasta connects its
    network, instead of after: that environment variable names a descriptor the command
    inherits, which gets one byte once the network is up (end of file if it could not be,
    and the sandbox is then killed); the command reads it and closes it before it uses the
    network. Python's start overlaps pasta's (ferry._container does this).
    """

    layers: Sequence[Path]
    argv: Sequence[str]
    upper_dir: Path | None = None
    work_dir: Path | None = None
    binds: Sequence[BindMount] = ()
    env: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ENV), hash=False)
    cwd: str = "/"
    hostname: str = DEFAULT_HOSTNAME
    network: Network = "none"
    devices: Sequence[str] = ()
    capabilities: Sequence[str] = DEFAULT_CAPABILITIES
    mount_dir: Path = DEFAULT_MOUNT_DIR
    network_ready_env: str | None = None
    # descriptors the command inherits (e.g. a spare sandbox's claim pipe, spares.py); the
    # launch closes the caller's copies
    inherit_fds: Sequence[int] = ()

    def __post_init__(self) -> None:
        if isinstance(self.argv, str):
            raise InvalidError(f"`argv` must be a list of arguments, e.g. {self.argv.split()!r}.")
        set_ = object.__setattr__
        set_(self, "layers", tuple(Path(p).absolute() for p in self.layers))
        set_(self, "argv", tuple(self.argv))
        set_(self, "binds", tuple(BindMount(Path(h).absolute(), c, r) for h, c, r in self.binds))
        set_(self, "env", MappingProxyType(dict(self.env)))
        set_(self, "devices", tuple(self.devices))
        set_(self, "inherit_fds", tuple(self.inherit_fds))
        set_(self, "capabilities", tuple(c.upper() for c in self.capabilities))
        set_(self, "mount_dir", Path(self.mount_dir).absolute())
        for name in ("upper_dir", "work_dir"):
            value = getattr(self, name)
            if value is not None:
                set_(self, name, Path(value).absolute())
        self._validate()

    @property
    def tmpfs_upper(self) -> bool:
        """Whether writes go to a tmpfs discarded at exit (no `upper_dir`)."""
        return self.upper_dir is None

    @property
    def root_mount(self) -> Path:
        """Where the launcher mounts the overlay root (in the sandbox's mount namespace)."""
        return self.mount_dir / "root"

    @property
    def scratch_mount(self) -> Path:
        """Where the launcher mounts the tmpfs holding a tmpfs upper layer."""
        return self.mount_dir / "scratch"

    def _validate(self) -> None:
        if not self.layers:
            raise InvalidError("A sandbox needs at least one root filesystem layer (`layers`).")
        if not self.argv:
            raise InvalidError("A sandbox needs a command (`argv` is empty).")
        if self.network not in NETWORKS:
            raise InvalidError(f"`network` must be one of {', '.join(NETWORKS)}, not {self.network!r}.")
        if self.network_ready_env is not None and (self.network != "pasta" or not _ENV_NAME.match(self.network_ready_env)):
            raise InvalidError("`network_ready_env` is a variable name, and only for network=\"pasta\".")
        if (self.upper_dir is None) != (self.work_dir is None):
            raise InvalidError(
                "Give both `upper_dir` and `work_dir` (an empty directory on the same "
                "filesystem), or neither for a tmpfs upper layer."
            )
        for path in (*self.layers, self.upper_dir, self.work_dir, self.mount_dir):
            if path is not None and _OVERLAY_UNSAFE.search(str(path)):
                raise InvalidError(
                    f"{path} cannot be an overlay layer: overlayfs options cannot contain "
                    f"',', ':' or '\\'. Store layers under a plainer path."
                )
        for inside in (self.cwd, *(b.container_path for b in self.binds), *self.devices):
            if not PurePosixPath(inside).is_absolute():
                raise InvalidError(f"{inside!r} must be an absolute path inside the sandbox.")
        bad_env = [k for k, v in self.env.items() if not _ENV_NAME.match(k) or "\0" in v]
        if bad_env:
            raise InvalidError(f"Invalid environment variable name(s) or value(s): {bad_env}.")
        if not _HOSTNAME.match(self.hostname):
            raise InvalidError(f"{self.hostname!r} is not a valid hostname (letters, digits, '-').")
        bad_caps = [c for c in self.capabilities if not _CAPABILITY.match(c)]
        if bad_caps:
            raise InvalidError(f"Invalid capability name(s) {bad_caps}; e.g. 'CAP_NET_RAW'.")


def build_bwrap_argv(spec: SandboxSpec, *, bwrap: str = "bwrap", env_fd: int | None = None,
                     sources: Sequence[Path] | None = None, resolv_fd: int | None = None) -> list[str]:
    """The bubblewrap command line, its root being the overlay at `spec.root_mount`.

    With `env_fd`, the environment is read from that file descriptor (`--args`, see
    `env_args`) rather than given as `--setenv` arguments, so values (secrets) never appear
    in the host's process list. `sources` (one per bind, in `spec.binds` order) replace the
    binds' host paths (the launcher's staged copies, see `staged_binds`); `resolv_fd` holds
    a pasta sandbox's /etc/resolv.conf."""
    argv = [
        bwrap,
        "--bind", str(spec.root_mount), "/",
        "--proc", "/proc",
        "--dev", "/dev",
        "--perms", "1777", "--tmpfs", "/tmp",
        "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
        "--hostname", spec.hostname,
        "--die-with-parent",
        "--new-session",
    ]
    if spec.network == "host":
        argv += ["--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf"]
    elif spec.network == "none":
        argv.append("--unshare-net")  # bwrap brings its loopback up
    elif resolv_fd is not None:  # pasta: the launcher's `unshare --net` made the namespace
        argv += ["--ro-bind-data", str(resolv_fd), "/etc/resolv.conf"]
    for device in spec.devices:
        argv += ["--dev-bind", device, device]
    paths = list(sources) if sources is not None else [b.host_path for b in spec.binds]
    argv += _bind_args(spec.binds, paths)
    argv += ["--cap-drop", "ALL"]
    for capability in spec.capabilities:
        argv += ["--cap-add", capability]
    argv.append("--clearenv")
    if env_fd is not None:
        argv += ["--args", str(env_fd)]
    else:
        for name, value in spec.env.items():
            argv += ["--setenv", name, value]
    argv += ["--chdir", spec.cwd, "--", *spec.argv]
    return argv


def env_args(spec: SandboxSpec) -> bytes:
    """The `--setenv` arguments of the spec's environment, NUL-separated (for `--args FD`)."""
    words = [word for name, value in spec.env.items() for word in ("--setenv", name, value)]
    return b"".join(word.encode() + b"\0" for word in words)


class LaunchFds(NamedTuple):
    """The descriptors a launcher gets (see `build_launch_argv`)."""

    env: int
    ready: int
    go: int
    resolv: int | None = None


def _bind_args(binds: Sequence[BindMount], sources: Sequence[Path]) -> list[str]:
    """bwrap's arguments for `binds` (`sources`: where bwrap finds each one's host path),
    parents before children so that a bind on /a does not hide one on /a/b.

    A read-only directory with other binds inside it is bound entry by entry, on a tmpfs made
    read-only once they are all in place, down the path to each of them, since bwrap could not
    make their mount points inside it; its symlinks stay symlinks, read as they are inside the
    sandbox. (A read-write one, a volume, is bound whole: its mount points go into it.)"""
    ops: list[tuple[str, list[str]]] = []  # (container path, arguments)
    frozen: list[str] = []  # the tmpfs directories, made read-only last

    def add(host: Path, source: Path, inside: str, read_only: bool) -> None:
        nested = [b.container_path for b in binds if _strictly_under(b.container_path, inside)]
        if not (read_only and nested and host.is_dir() and not host.is_symlink()):
            ops.append((inside, ["--ro-bind" if read_only else "--bind", str(source), inside]))
            return
        ops.append((inside, ["--perms", "0755", "--tmpfs", inside]))
        frozen.append(inside)
        for entry in sorted(os.listdir(host)):
            path = f"{inside.rstrip('/')}/{entry}"
            if path in nested:  # another bind takes its place
                continue
            if (host / entry).is_symlink():
                ops.append((path, ["--symlink", os.readlink(host / entry), path]))
            elif any(_strictly_under(n, path) for n in nested):
                add(host / entry, source / entry, path, read_only)
            else:
                ops.append((path, ["--ro-bind", str(source / entry), path]))

    for bind, source in zip(binds, sources):
        add(bind.host_path, Path(source), bind.container_path, bind.read_only)
    argv: list[str] = []
    for _, args in sorted(ops, key=lambda op: len(PurePosixPath(op[0]).parts)):
        argv += args
    for inside in frozen:
        argv += ["--remount-ro", inside]
    return argv


def _strictly_under(path: str, parent: str) -> bool:
    return PurePosixPath(parent) in PurePosixPath(path).parents


def staged_binds(spec: SandboxSpec) -> list[Path | None]:
    """For each bind, where the launcher binds its host path first (as host root) so that
    the sandbox's unprivileged root can reach it, or None when it can reach the path itself.

    bubblewrap runs as root of the sandbox's user namespace, which cannot traverse private
    host directories (the server's state directory is often 0700, under /root); so their
    binds are staged under `mount_dir/binds`, in the launcher's private mount namespace."""
    staged: list[Path | None] = []
    for index, bind in enumerate(spec.binds):
        if _reachable(bind.host_path):
            staged.append(None)
        else:
            kind = "dir" if bind.host_path.is_dir() else "file"
            staged.append(spec.mount_dir / "binds" / f"{kind}-{index}")
    return staged


def _reachable(path: Path) -> bool:
    """Whether the sandbox ids can reach `path` (search permission on every parent)."""
    ids = SANDBOX_IDS
    for parent in Path(os.path.realpath(path)).parents:
        info = os.stat(parent)
        if info.st_uid == ids.base:
            bit = stat.S_IXUSR
        elif info.st_gid == ids.base:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return False
    return True


def build_launch_argv(spec: SandboxSpec, cgroup: Cgroup | None, fds: LaunchFds,
                      staged: Sequence[Path | None] | None = None) -> list[str]:
    """The full command: join `cgroup`, mount the overlay root and the `staged` binds
    privately as host root, become the sandbox ids in a user namespace of their own (a
    network one too for pasta), report on `fds.ready`, wait for "go" on `fds.go`, exec bwrap."""
    tools = _tools()
    lines = [
        f'fail() {{ echo "ferry sandbox setup failed: $1" >&2; exit {SETUP_FAILED_EXIT_CODE}; }}'
    ]
    if cgroup is not None:
        for procs in cgroup.procs_files:
            lines.append(f"echo $$ > {_q(procs)} || fail {_q(f'joining cgroup {procs.parent}')}")
    ids = SANDBOX_IDS.base
    if spec.tmpfs_upper:
        scratch = spec.scratch_mount
        upper, work = scratch / "upper", scratch / "work"
        lines.append(
            f"{_q(tools['mount'])} -t tmpfs -o mode=0755 ferry-upper {_q(scratch)} "
            f"&& {_q(tools['mkdir'])} {_q(upper)} {_q(work)} && {_q(tools['chown'])} {ids}:{ids} {_q(upper)} "
            "|| fail 'mounting the tmpfs upper layer'"
        )
    else:
        assert spec.upper_dir is not None and spec.work_dir is not None
        upper, work = spec.upper_dir, spec.work_dir
    lower = ":".join(str(layer) for layer in reversed(spec.layers))  # overlayfs: topmost first
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    lines.append(
        f"{_q(tools['mount'])} -t overlay ferry-root -o {_q(options)} {_q(spec.root_mount)} "
        "|| fail 'mounting the overlay root: the upper and work directories must be on one "
        "filesystem (ext4, xfs, btrfs or tmpfs), the layers readable; the kernel log (dmesg) "
        "says more'"
    )
    staged = list(staged) if staged is not None else [None] * len(spec.binds)
    for bind, stage in zip(spec.binds, staged):
        if stage is not None:
            lines.append(f"{_q(tools['mount'])} --bind {_q(bind.host_path)} {_q(stage)} "
                         f"|| fail {_q(f'binding {bind.host_path}')}")
    sources = [stage or bind.host_path for bind, stage in zip(spec.binds, staged)]
    bwrap = build_bwrap_argv(spec, bwrap=tools["bwrap"], env_fd=fds.env, sources=sources,
                             resolv_fd=fds.resolv)
    inner = "\n".join([
        f"printf r >&{fds.ready} || exit {SETUP_FAILED_EXIT_CODE}",
        f"exec {fds.ready}>&-",
        f"IFS= read -r go <&{fds.go}",
        f"exec {fds.go}<&-",
        f'[ "$go" = go ] || {{ echo "ferry sandbox setup failed: the server did not finish the '
        f'namespaces" >&2; exit {SETUP_FAILED_EXIT_CODE}; }}',
        "exec " + shlex.join(bwrap),
    ])
    unshare = [tools["unshare"], "--user", *(["--net"] if spec.network == "pasta" else []), "--"]
    enter = [tools["setpriv"], f"--reuid={ids}", f"--regid={ids}", "--clear-groups", "--",
             *unshare, tools["bash"], "-c", inner]
    lines.append("exec " + shlex.join(enter))
    script = "\n".join(lines)
    return [tools["unshare"], "--mount", "--propagation", "private", "--", tools["bash"], "-c", script]


def check_sandbox_support() -> None:
    """Raise ExecutionError saying how to fix it if sandboxes cannot run on this host."""
    if os.geteuid() != 0:
        raise ExecutionError(
            "The sandbox runtime needs root (it mounts overlay root filesystems and writes the "
            "id maps of its user namespaces). Run the Ferry server as root, or use the "
            "`process` runtime."
        )
    _tools()


def launch(
    spec: SandboxSpec,
    *,
    stdin: Redirect = subprocess.DEVNULL,
    stdout: Redirect = None,
    stderr: Redirect = None,
    cgroup: Cgroup | None = None,
) -> subprocess.Popen[bytes]:
    """Start the sandbox; its process is in `cgroup` before any of its code runs.

    Returns once the sandbox's namespaces are set up (its command is starting). The process
    gets its own session (terminal signals do not reach it). Killing it kills the whole
    sandbox (bwrap --die-with-parent); so does the death of the calling thread. Its pasta
    network, if any, ends with it. Destroy the cgroup once it has exited.
    """
    prepared = _prepare(spec, cgroup)
    try:
        process = subprocess.Popen(
            prepared.argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=dict(_LAUNCHER_ENV),
            start_new_session=True,
            pass_fds=prepared.child_fds,
        )
    except BaseException:
        prepared.close()
        raise
    prepared.close_child_fds()
    try:
        network = prepared.finish(process.pid)
    except BaseException:
        _kill_group(process.pid)
        process.wait()
        raise
    if network is not None:
        _close_with(process.pid, network, None)
    return process


async def launch_async(
    spec: SandboxSpec,
    *,
    stdin: Redirect = subprocess.DEVNULL,
    stdout: Redirect = None,
    stderr: Redirect = None,
    cgroup: Cgroup | None = None,
) -> asyncio.subprocess.Process:
    """`launch` for asyncio: the same sandbox, as an `asyncio.subprocess.Process`."""
    prepared = _prepare(spec, cgroup)
    try:
        process = await asyncio.create_subprocess_exec(
            *prepared.argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=dict(_LAUNCHER_ENV),
            start_new_session=True,
            pass_fds=prepared.child_fds,
        )
    except BaseException:
        prepared.close()
        raise
    prepared.close_child_fds()
    try:
        network = await prepared.finish_async(process.pid)
    except BaseException:
        _kill_group(process.pid)
        await process.wait()
        raise
    if network is not None:
        _close_with(process.pid, network, asyncio.get_running_loop())
    return process


def signal_command(pid: int, sig: int) -> list[int]:
    """Send `sig` to the sandboxed command of the sandbox `launch` started as `pid`.

    Signal the command, not `pid`: a signal that ends bwrap makes it SIGKILL the command
    (--die-with-parent), and bwrap's init (pid 1 inside) ignores SIGTERM. So a graceful stop
    is `signal_command(pid, SIGTERM)`, then a kill of `pid` if it outlives a grace period.
    Returns the host pids signalled (none once the command has exited).
    """
    signalled: list[int] = []
    for init in _children(pid):  # bwrap's init, pid 1 inside the sandbox
        for child in _children(init):
            try:
                os.kill(child, sig)
                signalled.append(child)
            except ProcessLookupError:
                pass
    return signalled


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


class _Prepared:
    """A launch in the making: its command, the descriptors its launcher inherits, and the
    server's ends of the ready/go pipes (see `finish`)."""

    def __init__(self, spec: SandboxSpec, cgroup: Cgroup | None) -> None:
        self.spec = spec
        self._child: list[int] = []
        self._ready_r = self._go_w = self._network_w = -1
        try:
            self._open(cgroup)
        except BaseException:
            self.close()
            raise

    def _open(self, cgroup: Cgroup | None) -> None:
        spec = self.spec
        env = env_args(spec)
        if spec.network_ready_env is not None:  # the command waits on it (see SandboxSpec)
            network_r, self._network_w = os.pipe()
            self._keep(network_r)
            env += b"".join(w.encode() + b"\0" for w in ("--setenv", spec.network_ready_env, str(network_r)))
        for fd in spec.inherit_fds:
            self._keep(fd)
        env_fd = self._memfd("ferry-sandbox-env", env)
        staged = staged_binds(spec)
        for stage in staged:  # mount points of staged binds, shared by every launcher
            if stage is not None and not stage.exists():
                if stage.name.startswith("dir-"):
                    stage.mkdir(parents=True, exist_ok=True)
                else:
                    stage.parent.mkdir(parents=True, exist_ok=True)
                    stage.touch()
        resolv_fd = None
        self.forward_dns = False
        if spec.network == "pasta":
            text, self.forward_dns = resolv_conf()
            resolv_fd = self._memfd("ferry-sandbox-resolv", text.encode())
        self._ready_r, ready_w = os.pipe()
        go_r, self._go_w = os.pipe()
        self._keep(ready_w)
        self._keep(go_r)
        fds = LaunchFds(env=env_fd, ready=ready_w, go=go_r, resolv=resolv_fd)
        self.argv = build_launch_argv(spec, cgroup, fds, staged)
        self.child_fds = tuple(self._child)

    def _keep(self, fd: int) -> int:
        self._child.append(fd)
        return fd

    def _memfd(self, name: str, data: bytes) -> int:
        fd = self._keep(os.memfd_create(name, 0))
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
        return fd

    def close_child_fds(self) -> None:
        """The launcher has its copies (or failed to start): close ours."""
        for fd in self._child:
            os.close(fd)
        self._child = []

    def close(self) -> None:
        self.close_child_fds()
        for fd in (self._ready_r, self._go_w, self._network_w):
            if fd >= 0:
                os.close(fd)
        self._ready_r = self._go_w = self._network_w = -1

    def finish(self, pid: int) -> PastaNetwork | None:
        """Wait for the launcher `pid` to reach its user namespace, write its id map, connect
        its network, and let it go on. A launcher that failed before (its stderr and exit
        code say why) is left to exit."""
        try:
            readable, _, _ = select.select([self._ready_r], [], [], SETUP_TIMEOUT)
            if not readable:
                raise ExecutionError(self._late())
            if not self._mapped(pid):
                return None
            try:
                network = PastaNetwork.start(pid, self.forward_dns) if self.spec.network == "pasta" else None
            except (ExecutionError, OSError):  # (OSError: its /proc entry went too)
                if _ended_meanwhile(pid):  # (its namespace went with it): its stderr and exit code say why
                    return None
                raise
            self._connected()
            return network
        finally:
            self.close()

    async def finish_async(self, pid: int) -> PastaNetwork | None:
        """`finish` on the event loop, without a worker thread."""
        loop = asyncio.get_running_loop()
        try:
            ready = loop.create_future()
            loop.add_reader(self._ready_r, lambda: ready.done() or ready.set_result(None))
            try:
                await asyncio.wait_for(ready, SETUP_TIMEOUT)
            except asyncio.TimeoutError:
                raise ExecutionError(self._late()) from None
            finally:
                loop.remove_reader(self._ready_r)
            if not self._mapped(pid):
                return None
            try:
                network = await PastaNetwork.start_async(pid, self.forward_dns) if self.spec.network == "pasta" else None
            except (ExecutionError, OSError):
                if await asyncio.to_thread(_ended_meanwhile, pid):  # its stderr and exit code say why
                    return None
                raise
            self._connected()
            return network
        finally:
            self.close()

    def _late(self) -> str:
        return f"The sandbox did not reach its user namespace within {SETUP_TIMEOUT:.0f} s."

    def _mapped(self, pid: int) -> bool:
        """The launcher said it is in its user namespace: write the id map. False when it
        ended first instead. With `network_ready_env`, the command is let go now."""
        if not os.read(self._ready_r, 1):
            return False
        if os.readlink(f"/proc/{pid}/ns/user") == os.readlink("/proc/self/ns/user"):
            raise ExecutionError("The sandbox has no user namespace of its own.")
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{name}", "w") as handle:
                handle.write(SANDBOX_IDS.map_line())
        if self._network_w >= 0:  # the command starts while pasta connects
            self._go()
        return True

    def _connected(self) -> None:
        """The network is up: tell the command (`network_ready_env`), or let it go now."""
        if self._network_w >= 0:
            _write(self._network_w, b"n")
        else:
            self._go()

    def _go(self) -> None:
        _write(self._go_w, b"go\n")


def _ended_meanwhile(pid: int, wait: float = 1.0) -> bool:
    """Whether the launcher `pid` (a child of ours) has exited, or does within `wait` seconds:
    a sandbox whose setup failed (bwrap could not mount something) ends while pasta connects
    it, and pasta's error would hide bwrap's. Leaves it to be reaped by whoever waits for it."""
    deadline = time.monotonic() + wait
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:  # already reaped
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _write(fd: int, data: bytes) -> None:
    try:
        os.write(fd, data)
    except BrokenPipeError:  # it died meanwhile: its exit status says how
        pass


def _prepare(spec: SandboxSpec, cgroup: Cgroup | None) -> _Prepared:
    """Check the spec's paths, create its directories, and open what the launcher inherits."""
    missing = [str(p) for p in spec.layers if not p.is_dir()]
    if missing:
        raise InvalidError(f"Root filesystem layer(s) not found: {', '.join(missing)}.")
    missing = [str(b.host_path) for b in spec.binds if not b.host_path.exists()]
    if missing:
        raise InvalidError(f"Bind mount source(s) not found on the host: {', '.join(missing)}.")
    if not spec.mount_dir.is_dir():  # bwrap reaches the root through it as the sandbox ids
        spec.mount_dir.mkdir(parents=True, exist_ok=True)
        spec.mount_dir.chmod(0o755)
    for directory in (spec.root_mount, spec.scratch_mount, spec.upper_dir, spec.work_dir):
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
    if spec.upper_dir is not None:  # the root directory of the sandbox is root's inside
        chown_to_sandbox_root(spec.upper_dir)
    return _Prepared(spec, cgroup)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _close_with(pid: int, network: PastaNetwork, loop: asyncio.AbstractEventLoop | None) -> None:
    """End `network` when the process `pid` (not yet reaped by us) has ended."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        network.close()
        return

    def done() -> None:
        if loop is not None:
            loop.remove_reader(pidfd)
        os.close(pidfd)
        network.close()

    if loop is not None:
        loop.add_reader(pidfd, done)
    else:
        def wait() -> None:
            select.select([pidfd], [], [])
            done()
        threading.Thread(target=wait, name=f"sandbox-network-{pid}", daemon=True).start()


def _tools() -> dict[str, str]:
    found: dict[str, str] = {}
    missing: list[str] = []
    for name in ("bwrap", "unshare", "mount", "mkdir", "chown", "bash", "setpriv"):
        path = shutil.which(name, path=_LAUNCHER_ENV["PATH"])
        if path is None:
            missing.append(name)
        else:
            found[name] = path
    if missing:
        raise ExecutionError(
            f"The sandbox runtime needs {', '.join(missing)} on the host: install them with "
            f"`apt-get install -y bubblewrap util-linux mount bash` (Debian/Ubuntu)."
        )
    return found


def _q(value: object) -> str:
    return shlex.quote(str(value))
