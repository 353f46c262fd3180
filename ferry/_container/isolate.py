"""A container forked from a memory snapshot's template on the sandbox runtime: give it
namespaces, a root, /tmp, /dev and /proc of its own, then drop what the template may do.

The template is a sandbox that keeps CAP_SYS_ADMIN inside its own user namespace
(server/runtimes/sandbox/snapshots.py). Each child it forks runs `isolate` before any user code:

    C1  forked child   fork C2 into a user namespace of its own (nested in the template's,
                       ids mapped 0-65535 onto its ids, so root inside is the sandboxes'
                       unprivileged host id); write C2's id maps; keep no capability; wait for
                       C2 and end as it did
    C2  in its userns  its own session; unshare(mount, network, pid, IPC, UTS); tell the
                       server it is here (the server learns its host pid from the socket's
                       credentials and moves it into the container's cgroup), then read the
                       container's environment from the server (which connects pasta to the
                       network namespace meanwhile: the container waits for its byte on that
                       socket, FERRY_NETWORK_READY_FD, before any user code); fork C3; keep
                       no capability; wait for C3 and end as the container did
    C3  pid 1          mount the container's root (an overlay: the template's frozen root
                       under the container's own writable layer), a fresh /tmp, /dev and
                       /proc, the template's binds again; pivot_root; drop to the ordinary
                       sandbox capabilities with no_new_privs; fork C4; reap orphans
    C4  pid 2          the container: `become` returns its environment to the caller

Secrets and the container's credential come over the server's private socket to C2 only,
after the fork: the template never holds them. Everything here is Linux system calls through
ctypes (the container's Python may be older than os.unshare).
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import socket
import struct
import sys
from pathlib import Path
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x4000, 0x40000
MNT_DETACH = 0x2
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 24, 38, 47
PR_CAP_AMBIENT_RAISE, PR_CAP_AMBIENT_CLEAR_ALL = 2, 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
# capability numbers (linux/capability.h), in order
CAPABILITIES = tuple(f"CAP_{name}" for name in (
    "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE "
    "NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO "
    "SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME "
    "SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG "
    "WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE").split())
_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
_OWN = ("/proc", "/dev", "/tmp")  # made fresh, not bound from the template

_libc = ctypes.CDLL(None, use_errno=True)


class IsolationError(OSError):
    """A system call that isolating a child needs failed."""


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise IsolationError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(source and source.encode(), target.encode(), fstype and fstype.encode(),
                       ctypes.c_ulong(flags), data and data.encode()), f"mounting {target}")


def unshare_namespaces() -> None:
    """New mount, network, IPC and UTS namespaces for this process, a new pid namespace for its
    children; the mounts it inherited become private to it."""
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS),
           "unshare")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)


def _mount_points() -> list[tuple[str, bool, bool]]:
    """The template's mounts below / (its binds), parents first: each one's mount point,
    whether it is a file, and whether it is a file bubblewrap wrote then deleted (the
    resolv.conf of `--ro-bind-data`, which cannot be bound again)."""
    found: list[tuple[str, bool, bool]] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        point = _unescape(fields[4])
        if point == "/" or any(point == own or point.startswith(own + "/") for own in _OWN):
            continue
        is_file = not os.path.isdir(point)
        found.append((point, is_file, is_file and fields[3].endswith("//deleted")))
    return found


def _unescape(field: str) -> str:
    return field.encode().decode("unicode_escape").encode("latin-1").decode()


def make_root(lower: str, layer: str, exclude: list[str]) -> None:
    """In the new pid and mount namespaces (as their pid 1): mount the container's root, the
    template's frozen root `lower` under `layer` (its upper, work and root directories), with
    its own /tmp, /dev and /proc and the template's binds (but `exclude`), and make it this
    process's root."""
    new = f"{layer}/root"
    _mount("ferry-root", new, "overlay", 0,
           f"lowerdir={lower},upperdir={layer}/upper,workdir={layer}/work,userxattr")
    bound: list[str] = []
    for point, is_file, deleted in _mount_points():
        if any(point == path or point.startswith(path + "/") for path in (*exclude, *bound)):
            continue  # (a mount inside a bind came with it)
        target = new + point
        if os.path.islink(target):  # (e.g. an image's /etc/resolv.conf): bind over the path itself
            os.unlink(target)
        if is_file:
            if not os.path.exists(target):
                os.makedirs(os.path.dirname(target), exist_ok=True)
                open(target, "a").close()
        else:
            os.makedirs(target, exist_ok=True)
        if deleted:  # its content, read-only
            Path(target).write_bytes(Path(point).read_bytes())
            _mount(target, target, None, MS_BIND)
            _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        else:  # with what is mounted inside it (a bind keeps its source's flags: read-only)
            _mount(point, target, None, MS_BIND | MS_REC)
            bound.append(point)
    for own in _OWN:
        os.makedirs(new + own, exist_ok=True)
    _mount("proc", f"{new}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _mount("tmpfs", f"{new}/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    _make_dev(f"{new}/dev")
    old = f"{new}/.ferry-old-root"
    os.makedirs(old, exist_ok=True)
    os.chdir(new)
    number = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise IsolationError(0, f"pivot_root's system call number on {os.uname().machine} is not known")
    _check(_libc.syscall(number, b".", b".ferry-old-root"), "pivot_root")
    os.chroot(".")
    os.chdir("/")
    _check(_libc.umount2(b"/.ferry-old-root", MNT_DETACH), "unmounting the template's root")
    os.rmdir("/.ferry-old-root")


def _make_dev(dev: str) -> None:
    """A /dev like bubblewrap's: the harmless devices bound from the template's, a private
    /dev/shm and /dev/pts, the usual links."""
    _mount("tmpfs", dev, "tmpfs", MS_NOSUID, "mode=0755")
    for name in _DEVICES:
        open(f"{dev}/{name}", "a").close()
        _mount(f"/dev/{name}", f"{dev}/{name}", None, MS_BIND)
    os.mkdir(f"{dev}/shm")
    _mount("tmpfs", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    os.mkdir(f"{dev}/pts")
    _mount("devpts", f"{dev}/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620")
    os.symlink("pts/ptmx", f"{dev}/ptmx")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                         ("core", "/proc/kcore")):
        os.symlink(target, f"{dev}/{name}")


def keep_only(capabilities: list[str]) -> None:
    """Keep only `capabilities` (names): permitted, effective, inheritable and ambient sets
    exactly these, as bubblewrap leaves an ordinary sandbox's, the bounding set these too
    (bubblewrap leaves it full: no_new_privs keeps an exec from gaining any), and no_new_privs."""
    keep = 0
    for name in capabilities:
        keep |= 1 << CAPABILITIES.index(name)
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    for number in range(last + 1):
        if not keep & (1 << number):
            _check(_libc.prctl(PR_CAPBSET_DROP, number, 0, 0, 0), f"dropping capability {number}")
    _check(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clearing ambient capabilities")
    header = struct.pack("Ii", _LINUX_CAPABILITY_VERSION_3, 0)
    low, high = keep & 0xFFFFFFFF, keep >> 32
    data = struct.pack("6I", low, low, low, high, high, high)  # effective, permitted, inheritable
    _check(_libc.capset(ctypes.c_char_p(header), ctypes.c_char_p(data)), "capset")
    for number in range(last + 1):
        if keep & (1 << number):
            _check(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, number, 0, 0),
                   f"raising ambient capability {number}")
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "setting no_new_privs")


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    """`size` bytes from `sock`, or fewer if it ends first."""
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _mirror(status: int) -> None:
    """End this process as a child that ended with wait status `status` did."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # (the container dumped core, if it could)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def fork_into_user_namespace() -> int:
    """Fork a child into a user namespace of its own, whose ids 0-N are this one's (so root
    inside is the same unprivileged host id as in every sandbox): the child's pid in the
    parent, which wrote the child's id maps (it holds CAP_SETUID/CAP_SETGID here); 0 in the
    child, once mapped."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(go_w)
        _check(_libc.unshare(CLONE_NEWUSER), "unshare(user)")
        os.write(ready_w, b"r")
        os.close(ready_w)
        if os.read(go_r, 1) != b"g":
            os._exit(125)  # the parent failed: it says why
        os.close(go_r)
        return 0
    os.close(ready_w)
    os.close(go_r)
    try:
        if os.read(ready_r, 1) != b"r":
            raise IsolationError(0, "the child could not make its user namespace")
        count = Path("/proc/self/uid_map").read_text().split()[2]
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{name}", "w") as handle:
                handle.write(f"0 0 {count}\n")
        os.write(go_w, b"g")
    finally:
        os.close(ready_r)
        os.close(go_w)
    return pid


def become(plan: dict[str, Any], server: socket.socket) -> tuple[dict[str, str], str | None]:
    """In a child the template just forked (its own session and stdio already): isolate it as
    `plan` says ({lower, layer, exclude, capabilities}) and return, in the container's process
    only, the environment and working directory the server sent. The processes around it
    never return."""
    child = fork_into_user_namespace()
    if child != 0:  # C1: wait, then end as the container did
        server.close()
        keep_only([])
        _, status = os.waitpid(child, 0)
        _mirror(status)
    os.setsid()  # C2: the server's handle on the container is this process group
    unshare_namespaces()
    server.sendall(b"h")  # with our credentials: the server learns our host pid
    header = _read_exactly(server, 4)
    claim = _read_exactly(server, struct.unpack("!I", header)[0]) if len(header) == 4 else b""
    if not claim:
        os._exit(0)  # the server gave up on this container
    request = json.loads(claim)
    ready = server.detach()  # with pasta: one byte once it has connected (ferry._container waits)
    if request.get("network_ready"):
        request["env"]["FERRY_NETWORK_READY_FD"] = str(ready)
    else:
        os.close(ready)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)  # they are for the container, which gets them too
    status_r, status_w = os.pipe()
    init = os.fork()
    if init != 0:  # C2: wait, then end as the container did
        os.close(status_w)
        if request.get("network_ready"):
            os.close(ready)
        keep_only([])
        _, status = os.waitpid(init, 0)
        reported = os.read(status_r, 4)
        _mirror(struct.unpack("i", reported)[0] if len(reported) == 4 else status)
    os.close(status_r)
    try:  # C3: pid 1 of the container's pid namespace
        make_root(plan["lower"], plan["layer"], plan["exclude"])
        keep_only(plan["capabilities"])
    except BaseException:  # noqa: BLE001 - reported on the container's stderr
        import traceback

        traceback.print_exc()
        os._exit(125)
    container = os.fork()
    if container == 0:  # C4: the container
        os.close(status_w)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        return request["env"], request.get("cwd")
    if request.get("network_ready"):
        os.close(ready)  # the container's
    _reap_as_init(container, status_w)
    raise AssertionError("unreachable")


def _reap_as_init(container: int, status_w: int) -> None:
    """Pid 1's work: reap every orphan; when the container ends, report its status and end
    (which ends every process left in the namespace)."""
    for stream in (0, 1, 2):
        os.close(stream)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(0)
        if pid == container:
            os.write(status_w, struct.pack("i", status))
            os._exit(0)


def probe(lower: str, layer: str, exclude: list[str]) -> None:
    """In the template, after its preparation: check that a child can be isolated here (its
    user namespace and the others, the overlay over the frozen root, /proc, pivot_root,
    capabilities), so that a kernel that refuses one fails the snapshot instead of every
    container."""
    pid = os.fork()
    if pid == 0:
        try:
            child = fork_into_user_namespace()
            if child == 0:
                unshare_namespaces()
                init = os.fork()
                if init == 0:
                    make_root(lower, layer, exclude)
                    keep_only([])
                    os._exit(0)
                _, status = os.waitpid(init, 0)
                os._exit(os.waitstatus_to_exitcode(status))
            _, status = os.waitpid(child, 0)
            os._exit(os.waitstatus_to_exitcode(status))
        except BaseException:  # noqa: BLE001 - reported in the template's log
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise IsolationError(0, f"isolating a child in the template failed (exit status "
                                f"{os.waitstatus_to_exitcode(status)}; the template's log says why)")


def check_alone() -> None:
    """In the template, after its preparation: refuse processes the snap hooks left running
    (they would share the template's namespaces, and its power to enter its children's)."""
    others = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) not in (1, os.getpid()):
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            others.append(f"{entry.name} ({command.strip()})")
    if others:
        raise IsolationError(0, f"processes left running after the snap hooks: {'; '.join(others)}")


def freeze_root(view: str) -> None:
    """Make the template's root read-only, and bind it alone (without the mounts on it) at
    `view`, read-only too: the lower layer of every child's root (overlayfs refuses a lower
    layer with mounts on it in a user namespace that did not make them)."""
    os.makedirs(view, exist_ok=True)
    _mount("/", view, None, MS_BIND)
    _mount(None, view, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY)
