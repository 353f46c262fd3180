"""Apps for sandbox nodes of a Ray cluster (tests/integration/test_cluster_sandbox.py): their
containers run in sandboxes over Debian images without pytest, so they live here."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import ferry

app = ferry.App("test-cluster-sandbox")
seen = ferry.Dict.from_name("test-cluster-sandbox-seen", create_if_missing=True)
vol = ferry.Volume.from_name("test-cluster-sandbox-vol", create_if_missing=True)

commands_image = ferry.Image.debian_slim().run_commands("echo built-by-a-step > /etc/ferry-step.txt")
spare_image = ferry.Image.debian_slim().env({"SPARE_KIND": "node-spares"})  # its spares are known by it


def _namespaces() -> dict[str, str]:
    return {name: os.readlink(f"/proc/self/ns/{name}") for name in ("user", "pid", "net", "mnt", "uts", "ipc")}


def _where(port: int) -> dict[str, Any]:
    """Its namespaces, pid 1, whether the node's loopback port answers, its ids."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=3).close()
        loopback = "connected"
    except OSError as exc:
        loopback = type(exc).__name__
    return {"namespaces": _namespaces(), "pid": os.getpid(), "uid": os.getuid(),
            "pid1": open("/proc/1/cmdline", "rb").read().split(b"\0")[0].decode(),
            "loopback": loopback, "container": os.environ.get("FERRY_CONTAINER_ID"),
            "node": os.environ.get("FERRY_NODE_ID"), "url": os.environ.get("FERRY_SERVER_URL")}


@app.function()
def inside(port: int, marker: str) -> dict[str, Any]:
    """Where it runs (`_where`), and a file it writes at /root/`marker` (in its writable layer)."""
    with open(f"/root/{marker}", "w") as handle:
        handle.write("written inside")
    return _where(port)


@app.function(image=spare_image, secrets=[ferry.Secret.from_dict({"SPARE_SECRET": "s3cret"})])
def spared(port: int) -> dict[str, Any]:
    """Where it runs, how its process was started (a spare's: `ferry._container.spare`), its secret."""
    return {**_where(port), "cmdline": open("/proc/self/cmdline", "rb").read().replace(b"\0", b" ").decode(),
            "secret": os.environ.get("SPARE_SECRET"), "credential": bool(os.environ.get("FERRY_CONTAINER_SECRET"))}


@app.function(image=commands_image)
def step_output() -> dict[str, Any]:
    return {"text": open("/etc/ferry-step.txt").read().strip(), "container": os.environ.get("FERRY_CONTAINER_ID")}


@app.function(volumes={"/data": vol})
def write_and_read(text: str) -> dict[str, Any]:
    """Writes and commits a file in the volume; reads back what another container committed."""
    previous = open("/data/note.txt").read() if os.path.exists("/data/note.txt") else None
    with open("/data/note.txt", "w") as handle:
        handle.write(text)
    vol.commit()
    return {"previous": previous, "container": os.environ.get("FERRY_CONTAINER_ID")}


@app.function()
def interfaces() -> list[str]:
    """The network interfaces it sees (pasta gives it the node's, with outbound access)."""
    return sorted(name for _, name in socket.if_nameindex())


@app.function(block_network=True)
def interfaces_blocked() -> list[str]:
    return sorted(name for _, name in socket.if_nameindex())


@app.cls()
class Counter:
    """Its @exit hook runs when its container is stopped (SIGTERM to the sandbox's Python)."""

    @ferry.enter()
    def start(self) -> None:
        self.count = 0

    @ferry.method()
    def add(self, token: str) -> int:
        self.token = token
        self.count += 1
        return self.count

    @ferry.exit()
    def stop(self) -> None:
        seen[f"exit-{self.token}"] = self.count


@app.function(memory=96)
def allocate(megabytes: int) -> int:
    block = bytearray(megabytes * 1024 * 1024)
    for i in range(0, len(block), 4096):  # touch every page so it is really resident
        block[i] = 1
    return len(block)


@app.function(image=spare_image, memory=96, retries=0)
def allocate_where(megabytes: int) -> str:
    """`allocate` in a sandbox of spare_image: its command line (a spare's names `ferry._container.spare`)."""
    allocate.local(megabytes)
    return open("/proc/self/cmdline", "rb").read().replace(b"\0", b" ").decode()


@app.function(retries=0)
def linger(token: str, seconds: float) -> None:
    """Says which container it runs in and its process (its pid and PID namespace: a container
    that was a spare sandbox shows its own environment nowhere in /proc) under `token`, then
    runs for `seconds` (the test kills its node's agent meanwhile)."""
    seen[token] = {"container": os.environ.get("FERRY_CONTAINER_ID"), "pid": os.getpid(),
                   "pidns": os.readlink("/proc/self/ns/pid")}
    time.sleep(seconds)
