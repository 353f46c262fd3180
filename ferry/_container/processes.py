"""Commands run on request inside a container: a Sandbox's entrypoint and `exec`s
(ferry/_container/sandbox.py), and `ferry container exec` into a function's container (runner.py).

Each command runs in pipes (or a pty), in its own process group, and dies with this process
(PR_SET_PDEATHSIG); its output goes to the control plane as `sandbox.io` requests whose answers
nobody waits for (so they keep their order with everything else the uplink sends), and its exit
code as `sandbox.exited` once all its output has been sent.

Threads per command: one reader per output pipe (or the pty), a stdin writer, and a waiter.
The thread that starts commands must live as long as the container: a child's PDEATHSIG fires
when the thread that started it ends.
"""

from __future__ import annotations

import ctypes
import os
import pty
import queue
import signal
import subprocess
import threading
from typing import Any, Callable

from .uplink import Uplink

READ_SIZE = 65536
_PR_SET_PDEATHSIG = 1
NOT_PASSED = ("FERRY_SANDBOX_ID",)  # the supervisor's own settings, not its commands'


def _die_with_parent() -> None:
    """In the child, before exec: end with SIGKILL when the container's process dies (a kill of
    the container never leaves its commands behind, on any runtime)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:  # noqa: BLE001 - best effort: the runtime's own clean-up still applies
        pass


def _set_size(fd: int, size: Any) -> None:
    """A terminal's size (`[rows, columns]`) on a pty."""
    if not size:
        return
    import fcntl
    import struct
    import termios

    rows, columns = (int(v) for v in size)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


class Process:
    """One command, its output sent as it is read."""

    def __init__(self, host: "ProcessHost", exec_id: str, argv: list[str], *, workdir: str | None,
                 env: dict[str, str], use_pty: bool, stdout: str, stderr: str, size: Any = None) -> None:
        self.host = host
        self.exec_id = exec_id
        self.stdin_queue: queue.Queue = queue.Queue()
        full_env = {**os.environ, **env}
        for name in NOT_PASSED:
            full_env.pop(name, None)
        self.master: int | None = None
        if use_pty:
            master, slave = pty.openpty()
            self.master = master
            _set_size(master, size)

            def preexec() -> None:
                _die_with_parent()
                os.setsid()
                import fcntl
                import termios

                fcntl.ioctl(0, termios.TIOCSCTTY, 0)

            full_env.setdefault("TERM", "xterm-256color")
            try:
                self.popen = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=workdir,
                                              env=full_env, preexec_fn=preexec, close_fds=True)
            except BaseException:
                os.close(master)
                raise
            finally:
                os.close(slave)
            readers = [(master, 1)]
        else:
            def pipe(kind: str) -> Any:
                return subprocess.DEVNULL if kind == "devnull" else subprocess.PIPE

            self.popen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=pipe(stdout), stderr=pipe(stderr),
                                          cwd=workdir, env=full_env, preexec_fn=_die_with_parent,
                                          process_group=0)  # its own group: kill() ends its whole tree
            readers = [(stream.fileno(), fd) for stream, fd in ((self.popen.stdout, 1), (self.popen.stderr, 2))
                       if stream is not None]
        self.readers = [threading.Thread(target=self._read, args=(fileno, fd), daemon=True) for fileno, fd in readers]

    def begin(self) -> None:
        """Start sending its output (after whatever announced it), feeding its stdin, and
        waiting for its end."""
        for thread in self.readers:
            thread.start()
        threading.Thread(target=self._write_stdin, daemon=True).start()
        threading.Thread(target=self._wait, daemon=True).start()

    def _read(self, fileno: int, fd: int) -> None:
        while True:
            try:
                data = os.read(fileno, READ_SIZE)
            except OSError:  # a pty's reading end raises EIO once the command has exited
                data = b""
            if not data:
                return
            self.host.uplink.notify("sandbox.io", exec_id=self.exec_id, fd=fd, data=data)

    def _write_stdin(self) -> None:
        target = self.master if self.master is not None else (self.popen.stdin.fileno() if self.popen.stdin else None)
        while True:
            data, eof = self.stdin_queue.get()
            try:
                if data and target is not None:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(target, view):]
                if eof:
                    if self.master is not None:
                        os.write(self.master, b"\x04")  # end of input, as a terminal's ^D
                    elif self.popen.stdin is not None:
                        self.popen.stdin.close()
                    return
            except OSError:  # the command closed its stdin or ended
                return

    def _wait(self) -> None:
        code = self.popen.wait()
        for thread in self.readers:
            thread.join()
        if self.master is not None:
            os.close(self.master)
        self.host.ended(self, code)

    def kill(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except OSError:
            pass


class ProcessHost:
    """The commands of one container, started by `exec.start` pushes and fed by `exec.stdin`."""

    def __init__(self, uplink: Uplink, on_ended: Callable[[str, int], None] | None = None) -> None:
        self.uplink = uplink
        self.on_ended = on_ended  # (exec id, code), after `sandbox.exited` was sent
        self.processes: dict[str, Process] = {}
        self.lock = threading.Lock()
        self.workdir: str | None = None  # default for commands without one

    def start(self, exec_id: str, argv: list[str], *, workdir: str | None = None, env: dict[str, str] | None = None,
              use_pty: bool = False, stdout: str = "pipe", stderr: str = "pipe", timeout: float | None = None,
              size: Any = None, announce: bool = False) -> str | None:
        """Start a command; None, or what went wrong (e.g. no such program). With `announce`,
        `sandbox.started` is sent (with the error, if any) before any of its output."""
        try:
            process = Process(self, exec_id, argv, workdir=workdir or self.workdir, env=env or {}, use_pty=use_pty,
                              stdout=stdout, stderr=stderr, size=size)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            error = f"Could not run {argv[0]!r} in the container: {exc}"
            if announce:
                self.uplink.notify("sandbox.started", exec_id=exec_id, error=error)
            return error
        with self.lock:
            self.processes[exec_id] = process
        if announce:
            self.uplink.notify("sandbox.started", exec_id=exec_id, error=None)
        process.begin()
        if timeout:
            timer = threading.Timer(float(timeout), process.kill)
            timer.daemon = True
            timer.start()
        return None

    def on_push(self, frame: dict[str, Any]) -> bool:
        """Handle `exec.start`, `exec.stdin`, `exec.resize`, `exec.kill`; False for any other push."""
        kind = frame.get("k")
        if kind == "exec.start":
            self.start(frame["exec_id"], list(frame["argv"]), workdir=frame.get("workdir"),
                       env=dict(frame.get("env") or {}), use_pty=bool(frame.get("pty")),
                       stdout=frame.get("stdout") or "pipe", stderr=frame.get("stderr") or "pipe",
                       timeout=frame.get("timeout"), size=frame.get("size"), announce=True)
            return True
        if kind == "exec.resize":  # the terminal it runs in changed size (its programs get SIGWINCH)
            with self.lock:
                process = self.processes.get(frame["exec_id"])
            if process is not None and process.master is not None:
                _set_size(process.master, frame.get("size"))
            return True
        if kind == "exec.kill":  # whoever started it went away
            with self.lock:
                process = self.processes.get(frame["exec_id"])
            if process is not None:
                process.kill()
            return True
        if kind == "exec.stdin":
            with self.lock:
                process = self.processes.get(frame["exec_id"])
            if process is not None:
                process.stdin_queue.put((bytes(frame.get("data") or b""), bool(frame.get("eof"))))
            return True
        return False

    def ended(self, process: Process, code: int) -> None:
        with self.lock:
            self.processes.pop(process.exec_id, None)
        self.uplink.notify("sandbox.exited", exec_id=process.exec_id, code=code)
        if self.on_ended is not None:
            self.on_ended(process.exec_id, code)

    def kill_all(self) -> None:
        with self.lock:
            processes = list(self.processes.values())
        for process in processes:
            process.kill()
