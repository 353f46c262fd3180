"""Functions that probe what a container's credential allows (tests/integration/test_auth.py)."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import ferry

app = ferry.App("auth-probe")


@app.function()
def double(x: int) -> int:
    return 2 * x


# the same probe in a sandbox container (its own user and network namespaces, the control
# plane through the bound Unix socket)
sandbox_app = ferry.App("auth-probe-sandbox", image=ferry.Image.debian_slim(python_version="3.11"))


@app.function()
def try_requests(methods: list[str]) -> dict[str, list[str]]:
    return _try_requests(methods)


@sandbox_app.function()
def try_requests_in_a_sandbox(methods: list[str]) -> dict[str, list[str]]:
    return _try_requests(methods)


def _try_requests(methods: list[str]) -> dict[str, list[str]]:
    """Send each request with empty arguments over this container's own client connection."""
    from ferry._client import Client

    client = Client.from_env_sync()
    outcomes = {}
    for method in methods:
        try:
            client.request_sync(method)
            outcomes[method] = ["ok", ""]
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test checks
            outcomes[method] = [type(exc).__name__, str(exc)]
    return outcomes


@app.function()
def what_a_function_body_may_do(volume_name: str) -> dict:
    """Calls of functions of its app, a volume it looks up, its own credential."""
    volume = ferry.Volume.from_name(volume_name, create_if_missing=True)
    with volume.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"from a container"), "/note.txt")  # a commit through the control plane
    read = b"".join(volume.read_file("note.txt"))
    return {"double": double.remote(21), "mapped": list(double.map([1, 2])), "read": read.decode(),
            "credential": [os.environ["FERRY_CONTAINER_ID"], os.environ["FERRY_CONTAINER_SECRET"]]}


@app.function()
def run_cli(args: list[str]) -> list:
    """Run the `ferry` CLI inside the container, as a user's code might."""
    done = subprocess.run([sys.executable, "-m", "ferry", *args], capture_output=True, text=True, timeout=60)
    return [done.returncode, done.stdout, done.stderr]


@app.function()
def environment() -> list[str]:
    """What the container can read of its environment: os.environ and the block it started with."""
    with open("/proc/self/environ", "rb") as handle:
        started_with = handle.read().decode(errors="replace")
    return [repr(dict(os.environ)), started_with]
