"""`python -m ferry._container.sandbox`: the supervisor of a Sandbox's container.

The server starts it through the runtime as it starts a function's container (same image,
secrets, volumes, limits and namespaces). It connects back with the container's credential,
fills the volumes, runs the sandbox's entrypoint (if any) and the commands of `exec`, and
streams their output to the control plane (server/sandboxes.py) and their stdin from it.

Threads:
    main      reads frames from the server: exec.start, exec.stdin, answers to requests
    per process: one reader per output pipe (or the pty), a stdin writer, and a waiter that
              reports the exit code once all output has been sent

The supervisor ends when the entrypoint exits (with its code), or on SIGTERM (terminate,
timeout, the app stopping): it ends its processes and commits its volumes first.
"""

from __future__ import annotations

import ctypes
import os
import pty
import queue
import signal
import subprocess
import sys
import threading
from typing import Any

from .._protocol import FrameSocket, hello
from .runner import _wait_for_network
from .uplink import Uplink

READ_SIZE = 65536
_PR_SET_PDEATHSIG = 1


def _die_with_supervisor() -> None:
    """In the child, before exec: end with SIGKILL when the supervisor dies (a kill of the
    container never leaves its processes behind, on any runtime)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:  # noqa: BLE001 - best effort: the runtime's own clean-up still applies
        pass


class Process:
    """One command: started in pipes (or a pty), its output sent as `sandbox.io`."""

    def __init__(self, supervisor: "Supervisor", exec_id: str, argv: list[str], *, workdir: str | None,
                 env: dict[str, str], use_pty: bool, stdout: str, stderr: str) -> None:
        self.supervisor = supervisor
        self.exec_id = exec_id
        self.stdin_queue: queue.Queue = queue.Queue()
        full_env = {**os.environ, **env}
        full_env.pop("FERRY_SANDBOX_ID", None)
        self.master: int | None = None
        if use_pty:
            master, slave = pty.openpty()
            self.master = master

            def preexec() -> None:
                _die_with_supervisor()
                os.setsid()
                import fcntl
                import termios

                fcntl.ioctl(0, termios.TIOCSCTTY, 0)

            full_env.setdefault("TERM", "xterm-256color")
            self.popen = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=workdir, env=full_env,
                                          preexec_fn=preexec, close_fds=True)
            os.close(slave)
            readers = [(master, 1)]
        else:
            def pipe(kind: str) -> Any:
                return subprocess.DEVNULL if kind == "devnull" else subprocess.PIPE

            self.popen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=pipe(stdout), stderr=pipe(stderr),
                                          cwd=workdir, env=full_env, preexec_fn=_die_with_supervisor,
                                          process_group=0)  # its own group: kill() ends its whole tree
            readers = [(stream.fileno(), fd) for stream, fd in ((self.popen.stdout, 1), (self.popen.stderr, 2))
                       if stream is not None]
        self.readers = [threading.Thread(target=self._read, args=(fileno, fd), daemon=True) for fileno, fd in readers]
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
            self.supervisor.uplink.notify("sandbox.io", exec_id=self.exec_id, fd=fd, data=data)

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
        self.supervisor.process_ended(self, code)

    def kill(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except OSError:
            pass


class Supervisor:
    def __init__(self, uplink: Uplink) -> None:
        self.uplink = uplink
        self.processes: dict[str, Process] = {}
        self.lock = threading.Lock()
        self.sandbox_id = ""
        self.workdir: str | None = None
        self.ending = threading.Event()
        self.ready = False  # set up (workdir, volumes): exec requests before that wait in `waiting`
        self.waiting: list[dict[str, Any]] = []

    def start(self, exec_id: str, argv: list[str], *, workdir: str | None, env: dict[str, str],
              use_pty: bool = False, stdout: str = "pipe", stderr: str = "pipe",
              timeout: float | None = None) -> str | None:
        """Start a command; None, or what went wrong (e.g. no such program)."""
        try:
            process = Process(self, exec_id, argv, workdir=workdir or self.workdir, env=env, use_pty=use_pty,
                              stdout=stdout, stderr=stderr)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            return f"Could not run {argv[0]!r} in the sandbox: {exc}"
        with self.lock:
            self.processes[exec_id] = process
        if timeout:
            timer = threading.Timer(float(timeout), process.kill)
            timer.daemon = True
            timer.start()
        return None

    def process_ended(self, process: Process, code: int) -> None:
        with self.lock:
            self.processes.pop(process.exec_id, None)
        self.uplink.notify("sandbox.exited", exec_id=process.exec_id, code=code)
        if process.exec_id == self.sandbox_id:  # the entrypoint: the sandbox ends with its code
            self.finish(code)

    def finish(self, code: int) -> None:
        """End every process, commit the volumes, exit with `code`."""
        if self.ending.is_set():
            return
        self.ending.set()
        with self.lock:
            processes = list(self.processes.values())
        for process in processes:
            process.kill()
        if os.environ.get("FERRY_VOLUME_MOUNTS"):
            from . import volumes

            try:
                volumes.commit_all()
            except Exception as exc:  # noqa: BLE001 - reported, the sandbox still ends
                print(f"ferry sandbox: committing volumes failed: {exc}", file=sys.stderr, flush=True)
        self.uplink.close()  # (sends are synchronous: everything said has left)
        os._exit(code & 0xFF if code >= 0 else 128 + (-code & 0x7F))

    # -- frames from the server ------------------------------------------------------------------
    def serve(self) -> None:
        while True:
            try:
                frame = self.uplink.recv()
            except Exception:  # noqa: BLE001 - the server went away: nothing more can be asked of us
                self.finish(1)
                return
            kind = frame.get("t")
            if kind == "res":
                self.uplink.deliver_response(frame)
            elif kind == "push" and frame.get("k") == "exec.start":
                with self.lock:
                    if not self.ready:
                        self.waiting.append(frame)
                        continue
                # started on this thread, which lives as long as the supervisor: a child's
                # PDEATHSIG fires when the thread that started it ends
                self._exec(frame)
            elif kind == "push" and frame.get("k") == "exec.stdin":
                with self.lock:
                    process = self.processes.get(frame["exec_id"])
                if process is not None:
                    process.stdin_queue.put((bytes(frame.get("data") or b""), bool(frame.get("eof"))))

    def set_ready(self) -> None:
        """Set up: run the exec requests that came meanwhile (on the calling thread, which
        lives as long as the supervisor)."""
        while True:
            with self.lock:
                waiting, self.waiting = self.waiting, []
                if not waiting:
                    self.ready = True
                    return
            for frame in waiting:
                self._exec(frame)

    def _exec(self, frame: dict[str, Any]) -> None:
        error = self.start(frame["exec_id"], list(frame["argv"]), workdir=frame.get("workdir"),
                           env=dict(frame.get("env") or {}), use_pty=bool(frame.get("pty")),
                           stdout=frame.get("stdout") or "pipe", stderr=frame.get("stderr") or "pipe",
                           timeout=frame.get("timeout"))
        self.uplink.notify("sandbox.started", exec_id=frame["exec_id"], error=error)


def main() -> None:
    _wait_for_network()
    container_id = os.environ["FERRY_CONTAINER_ID"]
    sock = FrameSocket.connect(os.environ["FERRY_SERVER_URL"])
    sock.send(hello("client", token_id=container_id, token_secret=os.environ.get("FERRY_CONTAINER_SECRET", "")))
    welcome = sock.recv()
    if welcome.get("t") != "welcome":
        print(f"ferry sandbox: refused by the server: {welcome.get('msg')}", file=sys.stderr)
        sys.exit(2)
    uplink = Uplink(sock)
    supervisor = Supervisor(uplink)
    threading.Thread(target=supervisor.serve, name="ferry-sandbox-reader", daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=supervisor.finish, args=(143,)).start())
    info = uplink.request("sandbox.attach")
    supervisor.sandbox_id = info["sandbox_id"]
    supervisor.workdir = info.get("workdir")
    if supervisor.workdir:
        os.makedirs(supervisor.workdir, exist_ok=True)
    if os.environ.get("FERRY_VOLUME_MOUNTS"):  # volumes hold their files before anything runs
        from . import volumes

        volumes.install(uplink.request)
    os.environ.setdefault("FERRY_IS_CONTAINER", "1")
    supervisor.set_ready()
    if info.get("entrypoint"):
        error = supervisor.start(supervisor.sandbox_id, list(info["entrypoint"]), workdir=None, env={})
        if error is not None:
            uplink.notify("sandbox.io", exec_id=supervisor.sandbox_id, fd=2, data=(error + "\n").encode())
            uplink.notify("sandbox.exited", exec_id=supervisor.sandbox_id, code=127)
            supervisor.finish(127)
    while True:
        threading.Event().wait(3600)


if __name__ == "__main__":
    main()
