"""A local server that FERRY_RUNTIME=auto started on the process runtime before the sandbox's
packages were installed: `server.status`, `ferry server status` and `ferry setup` report the
runtime in use and the one that would be used now, a busy server keeps running (the client
says how to switch), and `ferry run` restarts an idle one with the sandbox runtime.

"Installing the packages" is simulated: the server starts with a PATH that lacks mmdebstrap,
and the test then links mmdebstrap into that PATH."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ferry
from ferry import _local_server
from ferry._client import Client
from ferry.server.runtimes import sandbox_unavailable_reason

from ..conftest import REPO, ServerProcess

pytestmark = pytest.mark.skipif(sandbox_unavailable_reason() is not None,
                                reason="needs a host where the sandbox runtime can run")

app = ferry.App("test-runtime-switch")


@app.function()
def ping() -> str:
    return "pong"


def _end(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(pid, signal.SIGKILL)


def test_an_idle_server_started_before_the_sandbox_could_run_is_switched(tmp_path: Path, monkeypatch, capsys) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    home = tmp_path / "home"
    proc = ServerProcess.start(home, extra_env={"FERRY_RUNTIME": "auto", "PATH": str(bin_dir)})
    restarted_pid = None
    proc.use(monkeypatch)
    try:
        status = Client.for_url(proc.url).request_sync("server.status")
        assert (status["runtime"], status["runtime_setting"], status["runtime_now"]) == ("process", "auto", "process")
        assert "mmdebstrap" in status["runtime_now_reason"]
        assert _local_server.runtime_note(status) is None

        (bin_dir / "mmdebstrap").symlink_to("/usr/bin/mmdebstrap")  # "apt-get install mmdebstrap"
        status = Client.for_url(proc.url).request_sync("server.status")
        assert (status["runtime"], status["runtime_now"], status["runtime_now_reason"]) == ("process", "sandbox", None)
        shown = subprocess.run([sys.executable, "-m", "ferry", "server", "status"], env=proc.env(),
                               capture_output=True, text=True, timeout=60)
        assert "runtime: process" in shown.stdout and "`ferry server stop`" in shown.stdout, shown.stdout

        # busy (a live app): it keeps running, and the client says how to switch
        with app.run(show_logs=False):
            assert ping.remote() == "pong"
            monkeypatch.delenv("FERRY_SERVER_URL")
            assert _local_server.switch_runtime_if_idle(home, proc.url) == proc.url
            assert "`ferry server stop`" in capsys.readouterr().err
            assert proc.process.poll() is None

        # idle: `ferry run` restarts it with the sandbox runtime, and the run works there
        env = {**proc.env(), "FERRY_PORT": "0", "FERRY_WEB_PORT": "0"}
        env.pop("FERRY_SERVER_URL")
        done = subprocess.run([sys.executable, "-m", "ferry", "run", "examples/hello_world.py"], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=600)
        state = json.loads((home / "server.json").read_text())
        restarted_pid = state["pid"]
        assert done.returncode == 0, done.stderr
        assert "Restarted the idle local Ferry server with the sandbox runtime" in done.stderr
        assert "runs on the sandbox runtime" in done.stderr and "Hello World!" in done.stdout
        assert state["runtime"] == "sandbox" and restarted_pid != proc.process.pid
        proc.process.wait(20)  # the old server stopped
    finally:
        proc.stop()
        if restarted_pid is not None:
            _end(restarted_pid)
