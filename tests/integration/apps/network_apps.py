"""Functions for the sandbox runtime's isolation tests (tests/integration/test_sandbox_isolation.py);
they run in sandboxes without pytest, so they live here."""

from __future__ import annotations

import os
import socket
import urllib.request
from pathlib import Path

import ferry

app = ferry.App("test-sandbox-isolation", image=ferry.Image.debian_slim(python_version="3.11"))
volume = ferry.Volume.from_name("test-sandbox-isolation", create_if_missing=True)


def _fetch(url: str) -> str:
    """The body at `url`, or the name of the error that kept it from being fetched."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()
    except OSError as error:
        reason = getattr(error, "reason", error)
        return f"error: {type(reason).__name__}: {reason}"


def _connect(host: str, port: int) -> str:
    try:
        with socket.create_connection((host, port), timeout=3):
            return "connected"
    except OSError as error:
        return f"error: {type(error).__name__}"


@app.function(volumes={"/data": volume})
def write_files(name: str) -> dict:
    """Root inside writes a file into its volume and its own root filesystem."""
    Path("/data", name).write_text("written by root inside")
    Path("/", name).write_text("written by root inside")
    uid_map = Path("/proc/self/uid_map").read_text().split()
    return {"uid": os.getuid(), "gid": os.getgid(), "uid_map": uid_map,
            "volume_owner": os.stat(f"/data/{name}").st_uid}


@app.function()
def probe(targets: list[list]) -> dict:
    """Connect to each (host, port); fetch each URL."""
    result = {}
    for target in targets:
        if isinstance(target, str):
            result[target] = _fetch(target)
        else:
            result[f"{target[0]}:{target[1]}"] = _connect(target[0], int(target[1]))
    result["interfaces"] = sorted(name for _, name in socket.if_nameindex())
    result["server_url"] = os.environ["FERRY_SERVER_URL"]
    return result


@app.function(block_network=True)
def probe_blocked(targets: list[list]) -> dict:
    return probe.local(targets)


@app.function(block_network=True)
def double_blocked(x: int) -> int:
    """Calls to another function still work: the control plane is reached over its socket."""
    return probe.remote([])["server_url"] and x * 2
