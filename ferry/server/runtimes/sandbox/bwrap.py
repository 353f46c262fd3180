"""Describe a sandbox (`SandboxSpec`) and launch it with bubblewrap.

The root of a sandbox is an overlayfs: the spec's read-only layers (a base root filesystem,
then one layer per image step) under a writable upper layer (a directory, or a tmpfs thrown
away at exit). bubblewrap 0.8 (Debian 12) has no overlay options (`--overlay-src` came in
0.9), so the overlay is mounted by a tiny shell launcher in a private mount namespace:

    unshare --mount --propagation private /bin/sh -c '
        echo $$ > <cgroup>/cgroup.procs          # join the cgroup before anything else runs
        mount -t tmpfs ... <mount_dir>/scratch    # only for a tmpfs upper layer
        mount -t overlay ... <mount_dir>/root
        exec bwrap --bind <mount_dir>/root / --proc /proc --dev /dev ... -- ARGV'

Every container uses the same (empty) host directory `mount_dir`; its mounts exist only in
the container's own mount namespace, so they vanish when the container ends, crashed or not,
and nothing is ever left mounted on the host. The pid that `launch` returns is the shell,
then bwrap (exec), so it is in the cgroup before bwrap or user code runs, and every process
of the container is born inside it (writing the pid after spawning would let the first
instructions, and any child forked meanwhile, run unconstrained).

The launcher needs root (mount). As root, bwrap keeps capabilities in the sandbox; the spec
keeps `DEFAULT_CAPABILITIES` (Docker's default set, without CAP_MKNOD) and drops the rest,
so user code cannot mount, load modules or reach raw devices.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import IO, Any, Final, NamedTuple

from ....exception import ExecutionError, InvalidError
from ..cgroups import Cgroup
from .rootfs import DEFAULT_HOSTNAME

DEFAULT_PATH: Final[str] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_ENV: Final[Mapping[str, str]] = MappingProxyType({"PATH": DEFAULT_PATH, "LANG": "C.UTF-8"})
DEFAULT_MOUNT_DIR: Final[Path] = Path("/run/ferry/sandbox")
DEFAULT_CAPABILITIES: Final[tuple[str, ...]] = (
    "CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP",
    "CAP_SETUID", "CAP_SYS_CHROOT",
)
SETUP_FAILED_EXIT_CODE: Final[int] = 125
"""Exit code of a sandbox whose setup (cgroup, overlay) failed; its stderr says why."""

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
    (bwrap adds PWD). `share_network` keeps the host's network (outbound access, host DNS);
    False gives a private network namespace with loopback only. `devices` are host device
    paths exposed as-is (e.g. /dev/nvidia0). `mount_dir` is an empty host directory the
    launcher mounts over, privately (see the module docstring).
    """

    layers: Sequence[Path]
    argv: Sequence[str]
    upper_dir: Path | None = None
    work_dir: Path | None = None
    binds: Sequence[BindMount] = ()
    env: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ENV), hash=False)
    cwd: str = "/"
    hostname: str = DEFAULT_HOSTNAME
    share_network: bool = True
    devices: Sequence[str] = ()
    capabilities: Sequence[str] = DEFAULT_CAPABILITIES
    mount_dir: Path = DEFAULT_MOUNT_DIR

    def __post_init__(self) -> None:
        if isinstance(self.argv, str):
            raise InvalidError(f"`argv` must be a list of arguments, e.g. {self.argv.split()!r}.")
        set_ = object.__setattr__
        set_(self, "layers", tuple(Path(p).absolute() for p in self.layers))
        set_(self, "argv", tuple(self.argv))
        set_(self, "binds", tuple(BindMount(Path(h).absolute(), c, r) for h, c, r in self.binds))
        set_(self, "env", MappingProxyType(dict(self.env)))
        set_(self, "devices", tuple(self.devices))
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


def build_bwrap_argv(spec: SandboxSpec, *, bwrap: str = "bwrap", env_fd: int | None = None) -> list[str]:
    """The bubblewrap command line, its root being the overlay at `spec.root_mount`.

    With `env_fd`, the environment is read from that file descriptor (`--args`, see
    `env_args`) rather than given as `--setenv` arguments, so values (secrets) never appear
    in the host's process list."""
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
    if spec.share_network:
        argv += ["--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf"]
    else:
        argv.append("--unshare-net")
    for device in spec.devices:
        argv += ["--dev-bind", device, device]
    # Parents before children, so that a bind on /a does not hide one on /a/b.
    for bind in sorted(spec.binds, key=lambda b: len(PurePosixPath(b.container_path).parts)):
        option = "--ro-bind" if bind.read_only else "--bind"
        argv += [option, str(bind.host_path), bind.container_path]
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


def build_launch_argv(spec: SandboxSpec, cgroup: Cgroup | None = None, env_fd: int | None = None) -> list[str]:
    """The full command: join `cgroup`, mount the overlay root privately, exec bwrap."""
    tools = _tools()
    lines = [
        f'fail() {{ echo "ferry sandbox setup failed: $1" >&2; exit {SETUP_FAILED_EXIT_CODE}; }}'
    ]
    if cgroup is not None:
        for procs in cgroup.procs_files:
            lines.append(f"echo $$ > {_q(procs)} || fail {_q(f'joining cgroup {procs.parent}')}")
    if spec.tmpfs_upper:
        scratch = spec.scratch_mount
        upper, work = scratch / "upper", scratch / "work"
        lines.append(
            f"{_q(tools['mount'])} -t tmpfs -o mode=0755 ferry-upper {_q(scratch)} "
            f"&& {_q(tools['mkdir'])} {_q(upper)} {_q(work)} "
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
    lines.append("exec " + shlex.join(build_bwrap_argv(spec, bwrap=tools["bwrap"], env_fd=env_fd)))
    script = "\n".join(lines)
    unshare = [tools["unshare"], "--mount", "--propagation", "private", "--"]
    return [*unshare, tools["sh"], "-c", script]


def check_sandbox_support() -> None:
    """Raise ExecutionError saying how to fix it if sandboxes cannot run on this host."""
    if os.geteuid() != 0:
        raise ExecutionError(
            "The sandbox runtime needs root (it mounts overlay root filesystems). Run the Ferry "
            "server as root, or use the `process` runtime."
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

    The process gets its own session (terminal signals do not reach it). Killing it kills
    the whole sandbox (bwrap --die-with-parent); so does the death of the calling thread.
    Destroy the cgroup once it has exited.
    """
    argv, env_fd = _prepare(spec, cgroup)
    try:
        return subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=dict(_LAUNCHER_ENV),
            start_new_session=True,
            pass_fds=(env_fd,),
        )
    finally:
        os.close(env_fd)


async def launch_async(
    spec: SandboxSpec,
    *,
    stdin: Redirect = subprocess.DEVNULL,
    stdout: Redirect = None,
    stderr: Redirect = None,
    cgroup: Cgroup | None = None,
) -> asyncio.subprocess.Process:
    """`launch` for asyncio: the same sandbox, as an `asyncio.subprocess.Process`."""
    argv, env_fd = _prepare(spec, cgroup)
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=dict(_LAUNCHER_ENV),
            start_new_session=True,
            pass_fds=(env_fd,),
        )
    finally:
        os.close(env_fd)


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


def _prepare(spec: SandboxSpec, cgroup: Cgroup | None) -> tuple[list[str], int]:
    """The launch command, and a memory file holding the environment (`env_args`) whose
    descriptor the launch passes to bwrap; the caller closes it once the process started."""
    missing = [str(p) for p in spec.layers if not p.is_dir()]
    if missing:
        raise InvalidError(f"Root filesystem layer(s) not found: {', '.join(missing)}.")
    missing = [str(b.host_path) for b in spec.binds if not b.host_path.exists()]
    if missing:
        raise InvalidError(f"Bind mount source(s) not found on the host: {', '.join(missing)}.")
    for directory in (spec.root_mount, spec.scratch_mount, spec.upper_dir, spec.work_dir):
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
    env_fd = os.memfd_create("ferry-sandbox-env", 0)
    try:
        os.write(env_fd, env_args(spec))
        os.lseek(env_fd, 0, os.SEEK_SET)
        return build_launch_argv(spec, cgroup, env_fd), env_fd
    except BaseException:
        os.close(env_fd)
        raise


def _tools() -> dict[str, str]:
    found: dict[str, str] = {}
    missing: list[str] = []
    for name in ("bwrap", "unshare", "mount", "mkdir", "sh"):
        path = shutil.which(name, path=_LAUNCHER_ENV["PATH"])
        if path is None:
            missing.append(name)
        else:
            found[name] = path
    if missing:
        raise ExecutionError(
            f"The sandbox runtime needs {', '.join(missing)} on the host: install them with "
            f"`apt-get install -y bubblewrap util-linux mount` (Debian/Ubuntu)."
        )
    return found


def _q(value: object) -> str:
    return shlex.quote(str(value))
