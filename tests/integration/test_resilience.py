"""Failures of the machinery itself: memory limits, a server that dies mid-call, a client
that disappears. Each must end in a clear error or a clean-up, never a hang."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import ferry
from ferry.exception import ConnectionError, OutOfMemoryError

from ..conftest import ServerProcess

app = ferry.App("test-resilience")


@app.function(memory=64)
def allocate(megabytes: int) -> int:
    block = bytearray(megabytes * 1024 * 1024)
    for i in range(0, len(block), 4096):  # touch every page so it is really resident
        block[i] = 1
    return len(block)


@app.function()
def slow(seconds: float) -> str:
    time.sleep(seconds)
    return "done"


def test_memory_limit_kill_raises_out_of_memory_error_naming_the_limit(server):
    with app.run(show_logs=False):
        assert allocate.remote(8) == 8 * 1024 * 1024
        with pytest.raises(OutOfMemoryError, match="64 MiB"):
            allocate.remote(256)
        assert allocate.remote(8) == 8 * 1024 * 1024  # a fresh container serves the next call


def test_server_dying_mid_call_raises_connection_error(tmp_path: Path, monkeypatch):
    """A server that does not come back within FERRY_RECONNECT_TIMEOUT: the waiting call fails
    (test_durability.py covers one that comes back)."""
    own = ServerProcess.start(tmp_path / "home")
    own.use(monkeypatch)
    monkeypatch.setenv("FERRY_RECONNECT_TIMEOUT", "2")
    try:
        with pytest.raises(ConnectionError, match="Lost the connection"):
            with app.run(show_logs=False):
                call = slow.spawn(0.1)
                assert call.get(timeout=30) == "done"
                started = time.monotonic()
                os.killpg(own.process.pid, signal.SIGKILL)  # mid-call, nothing graceful
                slow.remote(30)
        assert time.monotonic() - started < 20
    finally:
        own.stop(signal.SIGKILL)


def _live_containers(url: str, app_name: str) -> int:
    rows = ferry._client.Client.for_url(url).request_sync("app.list")
    return sum(r["containers"] for r in rows if r["name"] == app_name and r["state"] != "stopped")


def test_killed_client_stops_its_ephemeral_app(server, tmp_path: Path):
    script = tmp_path / "forever.py"
    script.write_text(textwrap.dedent("""
        import time, ferry
        app = ferry.App("test-orphaned-run")

        @app.function()
        def nap():
            time.sleep(600)

        @app.local_entrypoint()
        def main():
            nap.spawn()
            print("spawned", flush=True)
            time.sleep(600)
    """))
    process = subprocess.Popen([sys.executable, "-m", "ferry", "run", str(script)], env=server.env(),
                               stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "spawned"
        deadline = time.monotonic() + 30
        while _live_containers(server.url, "test-orphaned-run") == 0:
            assert time.monotonic() < deadline, "the spawned call never got a container"
            time.sleep(0.1)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        deadline = time.monotonic() + 30
        while _live_containers(server.url, "test-orphaned-run") != 0:
            assert time.monotonic() < deadline, "containers of a dead client's app kept running"
            time.sleep(0.1)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


deployed = ferry.App("test-resilience-deployed")


@deployed.cls()
class Scaler:
    factor: int = ferry.parameter(default=1)

    @ferry.method()
    def scale(self, x: int, delay: float) -> int:
        time.sleep(delay)
        return x * self.factor


def test_spawned_call_on_a_class_instance_survives_a_server_kill(tmp_path: Path, monkeypatch):
    home = tmp_path / "home"
    first = ServerProcess.start(home)
    first.use(monkeypatch)
    try:
        deployed.deploy(name="test-resilience-deployed")
        call = Scaler(factor=3).scale.spawn(5, 2.0)
        os.killpg(first.process.pid, signal.SIGKILL)  # before the call can finish
        first.process.wait(10)
        second = ServerProcess.start(home, port=first.port)
        try:
            assert ferry.FunctionCall.from_id(call.object_id).get(timeout=60) == 15
        finally:
            second.stop()
    finally:
        first.stop(signal.SIGKILL)
