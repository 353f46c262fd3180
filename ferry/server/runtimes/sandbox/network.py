"""A sandbox's network: its own namespace, connected to the internet by `pasta` (or not at all).

    network="pasta"  a network namespace of its own, linked to the outside by pasta (Debian's
                     `passt` package), a user-mode network stack: the container's connections
                     leave the host as connections of the pasta process, so the container gets
                     outbound TCP, UDP and ICMP, and nothing can connect in.
    network="none"   a network namespace with loopback only (block_network=True).
    network="host"   the host's own network (image build steps only: pip, apt).

pasta runs with:
    --config-net            the namespace gets the host's address, routes and MTU
    --no-map-gw             the gateway address is the real gateway, not the host's loopback
    -t none -u none         no port of the host forwarded into the namespace
    -T none -U none         no port of the namespace forwarded to the host's loopback (pasta's
                            default, `auto`, would make every port listening on the host's
                            127.0.0.1 reachable at the container's own 127.0.0.1)
    --runas BASE:BASE       it runs as the sandbox's own root, never as host root, and joins the
                            sandbox's user namespace (whose owner that id is)
So the host's loopback (127.0.0.0/8, ::1) is out of reach: 127.0.0.1 inside is the container's
own. DNS: the container's /etc/resolv.conf lists the host's nameservers that are not on the
host's loopback; if the host only has loopback resolvers (systemd-resolved's 127.0.0.53, a
local dnsmasq), pasta forwards queries sent to `DNS_FORWARD_ADDRESS` to the host's first
resolver (--dns-forward): port 53 of that resolver is then the one loopback service reachable.

pasta opens /dev/net/tun inside the namespace as that unprivileged id, so the device must be
usable by every user (mode 0666, Debian's default).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Final, Literal

from ....exception import ExecutionError
from .ids import SANDBOX_IDS

Network = Literal["pasta", "none", "host"]
NETWORKS: Final[tuple[str, ...]] = ("pasta", "none", "host")
DNS_FORWARD_ADDRESS: Final[str] = "169.254.0.53"
PASTA_FLAGS: Final[tuple[str, ...]] = (
    "--config-net", "--no-map-gw", "-t", "none", "-u", "none", "-T", "none", "-U", "none", "--quiet",
)
PASTA_TIMEOUT: Final[float] = 30.0
PID_DIR: Final[Path] = Path("/run/ferry-sandbox/pasta")
"""pasta's pid files, `<pid of the sandbox>.pid` (pasta writes them as the sandbox ids): a
restarted server ends the pastas left behind."""

_TOOL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_TUN = Path("/dev/net/tun")


def pasta_unavailable_reason() -> str | None:
    """Why sandboxes cannot get a pasta network here, or None."""
    if shutil.which("pasta", path=_TOOL_PATH) is None:
        return "pasta is not installed: install it with `apt-get install -y passt` (Debian/Ubuntu)"
    try:
        mode = _TUN.stat().st_mode & 0o777
    except FileNotFoundError:
        return f"{_TUN} does not exist: the kernel needs the tun driver (CONFIG_TUN)"
    if mode & 0o006 != 0o006:
        return (f"{_TUN} has mode {mode:o}; pasta opens it as an unprivileged user, so it must be "
                f"0666 (Debian's default): run `chmod 0666 {_TUN}`")
    return None


def resolv_conf(host_resolv: Path = Path("/etc/resolv.conf")) -> tuple[str, bool]:
    """The container's /etc/resolv.conf, and whether pasta must forward DNS for it."""
    try:
        lines = host_resolv.read_text().splitlines()
    except OSError:
        lines = []
    kept: list[str] = []
    servers = 0
    for line in lines:
        words = line.split()
        if not words or words[0].startswith(("#", ";")):
            continue
        if words[0] == "nameserver" and len(words) > 1:
            if _is_loopback(words[1]):
                continue
            servers += 1
        if words[0] in ("nameserver", "search", "domain", "options"):
            kept.append(" ".join(words))
    forward = servers == 0
    if forward:
        kept.insert(0, f"nameserver {DNS_FORWARD_ADDRESS}")
    return "\n".join(kept) + "\n", forward


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


class PastaNetwork:
    """The pasta process serving one sandbox's network namespace; `close()` ends it."""

    def __init__(self, pid: int, pidfd: int, pid_file: Path) -> None:
        self.pid = pid
        self._pidfd: int | None = pidfd
        self._pid_file = pid_file

    @classmethod
    def start(cls, sandbox_pid: int, forward_dns: bool) -> "PastaNetwork":
        """Connect the network namespace of `sandbox_pid` (already in its own user and network
        namespaces, its id map written). Returns once the namespace is configured."""
        argv, pid_file = cls._command(sandbox_pid, forward_dns)
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env={"PATH": _TOOL_PATH}, timeout=PASTA_TIMEOUT)
        return cls._started(result.returncode, result.stderr, pid_file)

    @classmethod
    async def start_async(cls, sandbox_pid: int, forward_dns: bool) -> "PastaNetwork":
        """`start` for asyncio (no thread: the server's worker threads may all be building)."""
        argv, pid_file = cls._command(sandbox_pid, forward_dns)
        # stderr goes to a file, not a pipe: pasta's background half may keep a pipe open
        with tempfile.TemporaryFile() as errors:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
                env={"PATH": _TOOL_PATH})
            try:
                await asyncio.wait_for(process.wait(), PASTA_TIMEOUT)
            except BaseException as exc:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                if isinstance(exc, TimeoutError):
                    raise ExecutionError(f"pasta did not connect the sandbox's network within "
                                         f"{PASTA_TIMEOUT:.0f} s.") from None
                raise
            errors.seek(0)
            stderr = errors.read()
        assert process.returncode is not None
        return cls._started(process.returncode, stderr, pid_file)

    @staticmethod
    def _command(sandbox_pid: int, forward_dns: bool) -> tuple[list[str], Path]:
        own = os.readlink("/proc/self/ns/net")
        if os.readlink(f"/proc/{sandbox_pid}/ns/net") == own:  # never configure the host's
            raise ExecutionError("The sandbox has no network namespace of its own yet.")
        if not PID_DIR.is_dir():
            PID_DIR.mkdir(parents=True, exist_ok=True)
            os.chown(PID_DIR, SANDBOX_IDS.base, SANDBOX_IDS.base)
        pid_file = PID_DIR / f"{sandbox_pid}.pid"
        ids = f"{SANDBOX_IDS.base}:{SANDBOX_IDS.base}"
        argv = [shutil.which("pasta", path=_TOOL_PATH) or "pasta", *PASTA_FLAGS, "--runas", ids,
                "--userns", f"/proc/{sandbox_pid}/ns/user", "--netns", f"/proc/{sandbox_pid}/ns/net",
                "--pid", str(pid_file)]
        if forward_dns:
            argv += ["--dns-forward", DNS_FORWARD_ADDRESS]
        return argv, pid_file

    @classmethod
    def _started(cls, returncode: int, stderr: bytes, pid_file: Path) -> "PastaNetwork":
        """pasta has configured the namespace and gone to the background (exit code 0)."""
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if returncode != 0 or not pid:
            if pid:
                _kill(pid)
            pid_file.unlink(missing_ok=True)
            said = [line for line in stderr.decode(errors="replace").splitlines()
                    if line.strip() and "syslog" not in line]
            reason = pasta_unavailable_reason() or "; ".join(said[-5:]) or f"exit code {returncode}"
            raise ExecutionError(f"Could not connect the sandbox's network with pasta: {reason}")
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            pid_file.unlink(missing_ok=True)
            raise ExecutionError("pasta exited right after connecting the sandbox's network.") from None
        return cls(pid, pidfd, pid_file)

    def close(self) -> None:
        """End pasta (it keeps the namespace alive and would outlive the sandbox)."""
        if self._pidfd is None:
            return
        pidfd, self._pidfd = self._pidfd, None
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        except ProcessLookupError:
            pass
        finally:
            os.close(pidfd)
            self._pid_file.unlink(missing_ok=True)


def end_leftover_pastas() -> None:
    """End pasta processes whose sandbox has gone (their server stopped without ending them)."""
    if not PID_DIR.is_dir():
        return
    for pid_file in PID_DIR.glob("*.pid"):
        sandbox = pid_file.stem
        if sandbox.isdigit() and Path(f"/proc/{sandbox}").exists():
            continue  # its sandbox still runs (maybe another server's)
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            pid_file.unlink(missing_ok=True)
            continue
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            comm, cmdline = "", b""
        if comm.startswith(("pasta", "passt")) and f"/proc/{sandbox}/ns/net".encode() in cmdline:
            _kill(pid)
        pid_file.unlink(missing_ok=True)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
