"""What runs inside a zygote (`python -m ferry.server.runtimes.zygote_process FD [SNAPSHOT]`):
import the container entrypoint once, then fork a container per request from the server (see
zygote.py for the protocol). Single-threaded by design: it refuses to serve if an import started
a thread. With SNAPSHOT (a JSON file), it is a memory snapshot's template: it also imports the
function's code and runs its `snap=True` hooks first (ferry/_container/snapshot.py).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from ferry._container.become import preload, run_as

MAX_MESSAGE = 1 << 20
PR_SET_PDEATHSIG = 1


def die_with(parent: int, prctl: Any = None) -> None:
    """Have the kernel SIGKILL this process when `parent`, the process that forked it, ends
    (PR_SET_PDEATHSIG); exit at once if it already has. Run in a forked child before anything
    else: `prctl` is resolved before the fork where the parent has threads."""
    if prctl is None:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:
        os._exit(137)


def _send(control: socket.socket, message: dict[str, Any]) -> None:
    control.send(json.dumps(message).encode())


def _reap(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(control, {"op": "exited", "pid": pid, "code": os.waitstatus_to_exitcode(status)})


def _become_container(request: dict[str, Any], fds: list[int], control: socket.socket,
                      inherited: tuple[int, ...], zygote: int) -> None:
    """In the forked child: its own session, stdio and cgroup, then what `python -m
    ferry._container` (or the requested module, e.g. a sandbox's supervisor) would be. A
    request with `isolate` (a sandbox's snapshot template) also gets namespaces, a root and
    its environment of its own first (ferry/_container/isolate.py), over a third descriptor."""
    try:
        if request.get("die_with_parent"):  # it never outlives this zygote
            die_with(zygote)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        control.close()
        for fd in inherited:
            os.close(fd)
        os.setsid()  # its own process group, as the runtime's killpg expects
        out, err = fds[:2]
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        for fd in (null, out, err):
            os.close(fd)
        for procs in request["cgroup_procs"]:  # join the cgroup before anything of the container runs
            with open(procs, "w") as handle:
                handle.write(str(os.getpid()))
        env, cwd = request["env"], request.get("cwd")
        if "isolate" in request:
            from ferry._container.isolate import become

            env, cwd = become(request["isolate"], socket.socket(fileno=fds[2]))
    except BaseException:  # noqa: BLE001 - reported on the container's stderr, if it has one
        import traceback

        traceback.print_exc()
        os._exit(1)
    run_as(env, cwd, request.get("module"))


def main() -> None:
    import select
    import threading

    control = socket.socket(fileno=int(sys.argv[1]))
    preload()
    if len(sys.argv) > 2:  # a memory snapshot's template
        try:
            from ferry._container import snapshot

            snapshot.prepare(json.loads(Path(sys.argv[2]).read_text()))
        except BaseException as exc:  # noqa: BLE001 - the server starts containers the ordinary way
            import traceback

            traceback.print_exc()  # into the snapshot's log
            _send(control, {"op": "unsafe", "msg": f"making the snapshot failed: {exc!r}"})
            sys.exit(1)
    if threading.active_count() > 1:  # forking with threads running is unsafe
        names = ", ".join(t.name for t in threading.enumerate())
        _send(control, {"op": "unsafe", "msg": f"threads running after imports: {names}"})
        sys.exit(1)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    _send(control, {"op": "ready", "pid": os.getpid()})
    while True:
        readable, _, _ = select.select([control.fileno(), wake_r], [], [])
        if wake_r in readable:
            try:
                while os.read(wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
            _reap(control)
        if control.fileno() not in readable:
            continue
        try:
            data, fds, _, _ = socket.recv_fds(control, MAX_MESSAGE, 3)
        except ConnectionResetError:
            data, fds = b"", []
        if not data:
            return  # the server is gone; its containers end when their connections drop
        request = json.loads(data)
        zygote = os.getpid()
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            _send(control, {"op": "failed", "id": request["id"], "msg": str(exc)})
            continue
        if pid == 0:
            _become_container(request, fds, control, (wake_r, wake_w), zygote)
        for fd in fds:
            os.close(fd)
        _send(control, {"op": "spawned", "id": request["id"], "pid": pid})


if __name__ == "__main__":
    main()
