"""`python -m ferry._container.sandbox`: the supervisor of a Sandbox's container.

The server starts it through the runtime as it starts a function's container (same image,
secrets, volumes, limits and namespaces; the process runtime forks it from the same zygote).
It connects back with the container's credential, fills the volumes, runs the sandbox's
entrypoint (if any) and the commands of `exec` (processes.py), and streams their output to the
control plane (server/sandboxes.py) and their stdin from it.

Threads:
    main      sets up, starts the entrypoint, then sleeps
    reader    reads frames from the server: exec.start, exec.stdin, answers to requests; it
              starts the commands (it lives as long as the supervisor: see processes.py)

The supervisor ends when the entrypoint exits (with its code), or on SIGTERM (terminate,
timeout, the app stopping): it kills its commands and commits its volumes first.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from .. import _config
from .._protocol import FrameSocket, hello
from .processes import ProcessHost
from .runner import _wait_for_network
from .uplink import Uplink


class Supervisor:
    def __init__(self, uplink: Uplink) -> None:
        self.uplink = uplink
        self.host = ProcessHost(uplink, on_ended=self._process_ended)
        self.sandbox_id = ""
        self.ending = threading.Event()
        self.lock = threading.Lock()
        self.ready = False  # set up (workdir, volumes): exec requests before that wait in `waiting`
        self.waiting: list[dict[str, Any]] = []

    def _process_ended(self, exec_id: str, code: int) -> None:
        if exec_id == self.sandbox_id:  # the entrypoint: the sandbox ends with its code
            self.finish(code)

    def finish(self, code: int) -> None:
        """End every command, commit the volumes, exit with `code`."""
        if self.ending.is_set():
            return
        self.ending.set()
        self.host.kill_all()
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
            elif kind == "push":
                with self.lock:
                    if not self.ready:
                        self.waiting.append(frame)
                        continue
                self.host.on_push(frame)

    def set_ready(self) -> None:
        """Set up: handle the pushes that came meanwhile (on the calling thread, which lives as
        long as the supervisor)."""
        while True:
            with self.lock:
                waiting, self.waiting = self.waiting, []
                if not waiting:
                    self.ready = True
                    return
            for frame in waiting:
                self.host.on_push(frame)


def main() -> None:
    _wait_for_network()
    container_id = os.environ["FERRY_CONTAINER_ID"]
    sock = FrameSocket.connect(os.environ["FERRY_SERVER_URL"],
                               fingerprint=_config.get("tls_fingerprint") or None)  # (a TLS server's pin)
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
    supervisor.host.workdir = info.get("workdir")
    if supervisor.host.workdir:
        os.makedirs(supervisor.host.workdir, exist_ok=True)
    if os.environ.get("FERRY_VOLUME_MOUNTS"):  # volumes hold their files before anything runs
        from . import volumes

        volumes.install(uplink.request)
    if info.get("mount"):  # a function's source code (`ferry shell`), importable by its commands
        from .user_code import materialise_mount

        root = materialise_mount(info["mount"], lambda digest: uplink.request("blob.get", hash=digest))
        os.environ["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH")])])
    os.environ.setdefault("FERRY_IS_CONTAINER", "1")
    # the image's Python first on PATH: `python`/`pip` in commands are the image's (on the
    # process runtime, its venv), as the function containers of that image run them
    bin_dir = os.path.dirname(sys.executable)
    os.environ["PATH"] = os.pathsep.join([bin_dir, *[p for p in os.environ.get("PATH", "").split(os.pathsep)
                                                       if p and p != bin_dir]])
    supervisor.set_ready()
    if info.get("entrypoint"):
        error = supervisor.host.start(supervisor.sandbox_id, list(info["entrypoint"]))
        if error is not None:
            uplink.notify("sandbox.io", exec_id=supervisor.sandbox_id, fd=2, data=(error + "\n").encode())
            uplink.notify("sandbox.exited", exec_id=supervisor.sandbox_id, code=127)
            supervisor.finish(127)
    while True:
        threading.Event().wait(3600)


if __name__ == "__main__":
    main()
