"""Classes with memory snapshots for the sandbox runtime (test_snapshots.py): each reports what it
sees, since sandbox containers share no files with the tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import urllib.request
import uuid
from pathlib import Path

import ferry

app = ferry.App("test-snapshots-sandbox", image=ferry.Image.debian_slim(python_version="3.11"))
SECRET = "snap-secret-" + "7f3a9c"  # (built, so that this file's text holds no copy of it)


def _caps() -> dict[str, str]:
    lines = Path("/proc/self/status").read_text().splitlines()
    return {line.split(":")[0]: line.split()[1] for line in lines if line.startswith("Cap")}


def _connect(host: str, port: int) -> str:
    """(network_apps.py has the same: container code is loaded without its package, so apps
    cannot share helpers.)"""
    try:
        with socket.create_connection((host, port), timeout=3):
            return "connected"
    except OSError as error:
        return f"error: {type(error).__name__}"


@app.cls(enable_memory_snapshot=True, secrets=[ferry.Secret.from_dict({"SNAP_SECRET": SECRET})])
class Snapped:
    @ferry.enter(snap=True)
    def load(self) -> None:
        self.snapshot_token = uuid.uuid4().hex       # made once, in the template
        self.secret_at_snapshot = os.environ.get("SNAP_SECRET")
        self.table = {n: n * n for n in range(10_000)}
        Path("/root/written-in-snapshot").write_text(self.snapshot_token)

    @ferry.enter()
    def ready(self) -> None:
        self.container_token = uuid.uuid4().hex      # made in every container

    @ferry.method()
    def info(self) -> dict:
        return {"snapshot_token": self.snapshot_token, "container_token": self.container_token,
                "secret_at_snapshot": self.secret_at_snapshot, "secret": os.environ.get("SNAP_SECRET"),
                "table": self.table[99], "pid": os.getpid(), "container_id": os.environ["FERRY_CONTAINER_ID"],
                "user_namespace": os.readlink("/proc/self/ns/user"), "uid": os.getuid(),
                "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
                "snapshot_file": Path("/root/written-in-snapshot").read_text()}

    @ferry.method()
    def leave_traces(self, name: str) -> dict:
        """Write `name` in / and /tmp, start a process that stays; say what it saw of others."""
        seen = {"root": sorted(p.name for p in Path("/root").glob("trace-*")),
                "tmp": sorted(p.name for p in Path("/tmp").glob("trace-*")),
                "cmdlines": [Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")
                             for p in os.listdir("/proc") if p.isdigit()]}
        Path(f"/root/trace-{name}").write_text(name)
        Path(f"/tmp/trace-{name}").write_text(name)
        subprocess.Popen(["sleep", f"{1000 + len(name)}"], start_new_session=True)
        return seen

    @ferry.method()
    def probe(self, targets: list[list]) -> dict:
        return {"caps": _caps(), "no_new_privs": _status("NoNewPrivs"),
                "hostname": socket.gethostname(),
                "interfaces": sorted(name for _, name in socket.if_nameindex()),
                **{f"{host}:{port}": _connect(host, port) for host, port in targets}}

    @ferry.method()
    def fetch(self, url: str) -> str:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode()


@app.function()
def ordinary_probe() -> dict:
    """An ordinary sandbox container's capabilities, to compare with one from a snapshot."""
    return {"caps": _caps(), "no_new_privs": _status("NoNewPrivs"), "hostname": socket.gethostname()}


def _status(name: str) -> str:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split()[1]
    return ""


@app.function(enable_memory_snapshot=True, memory=200)
def exits(how: str) -> None:
    """End the container: `code` exits 3, `signal` by SIGSEGV, `memory` exceeds its limit."""
    if how == "code":
        os._exit(3)
    if how == "signal":
        os.kill(os.getpid(), signal.SIGSEGV)
    hog = []
    while True:
        hog.append(bytearray(16 * 1024 * 1024))


@app.cls(enable_memory_snapshot=True)
class Stopped:
    exits: str = ferry.parameter()  # a Queue's id: @exit reports there

    @ferry.enter(snap=True)
    def load(self) -> None:
        self.token = uuid.uuid4().hex

    @ferry.method()
    def ping(self) -> str:
        return self.token

    @ferry.exit()
    def teardown(self) -> None:
        ferry.Queue.from_id(self.exits).put({"exited": self.token})


@app.cls(enable_memory_snapshot=True, block_network=True)
class Offline:
    @ferry.enter(snap=True)
    def load(self) -> None:
        self.token = uuid.uuid4().hex

    @ferry.method()
    def probe(self) -> dict:
        with socket.socket() as listener:  # its own loopback is up
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            reached = _connect("127.0.0.1", listener.getsockname()[1])
        return {"interfaces": sorted(name for _, name in socket.if_nameindex()), "loopback": reached,
                "outside": _connect("198.18.0.1", 80), "pid": os.getpid()}


@app.function(enable_memory_snapshot=True, volumes={"/data": ferry.Volume.from_name("test-snapshots-sandbox",
                                                                                 create_if_missing=True)})
def with_volume() -> bool:
    return os.path.isdir("/data")
