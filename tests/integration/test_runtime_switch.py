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


def test_a_server_started_before_the_sandbox_could_run_says_how_to_switch(tmp_path: Path, monkeypatch, capsys) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    home = tmp_path / "home"
    proc = ServerProcess.start(home, extra_env={"FERRY_RUNTIME": "auto", "PATH": str(bin_dir)})
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
        local = {**proc.env()}
        local.pop("FERRY_SERVER_URL")  # `ferry setup` looks at the local server of FERRY_HOME
        shown = subprocess.run([sys.executable, "-m", "ferry", "setup"], env=local, capture_output=True, text=True,
                               timeout=60)
        assert "Runtime in use: process" in shown.stdout and "`ferry server stop`" in shown.stdout, shown.stdout
        assert proc.process.poll() is None  # (run in the foreground: not restarted)

        # busy (a live app): it keeps running, and the client says how to switch
        with app.run(show_logs=False):
            assert ping.remote() == "pong"
            assert _local_server.switch_runtime_if_idle(home, proc.url) == proc.url
            assert "`ferry server stop`" in capsys.readouterr().err
        # idle, but not started by a client (someone runs it in a terminal): the same
        assert _local_server.switch_runtime_if_idle(home, proc.url) == proc.url
        assert "`ferry server stop`" in capsys.readouterr().err
        assert proc.process.poll() is None
    finally:
        proc.stop()


def test_an_idle_background_server_is_restarted_with_the_sandbox_runtime(tmp_path: Path, monkeypatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    pids = []
    try:
        with monkeypatch.context() as patch:  # a client starts it, before "mmdebstrap is installed"
            for name, value in {"PATH": str(bin_dir), "FERRY_RUNTIME": "auto", "FERRY_HOME": str(home),
                                "FERRY_PORT": "0", "FERRY_WEB_PORT": "0"}.items():
                patch.setenv(name, value)
            patch.delenv("FERRY_SERVER_URL", raising=False)
            _local_server.start_background_server(home)
        first = json.loads((home / "server.json").read_text())
        pids.append(first["pid"])
        assert (first["runtime"], first["runtime_setting"], first["background"]) == ("process", "auto", True)

        (bin_dir / "mmdebstrap").symlink_to("/usr/bin/mmdebstrap")  # "apt-get install mmdebstrap"
        env = {**os.environ, "FERRY_HOME": str(home), "FERRY_PORT": "0", "FERRY_WEB_PORT": "0"}
        env.pop("FERRY_SERVER_URL", None)
        done = subprocess.run([sys.executable, "-m", "ferry", "run", "examples/hello_world.py"], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=600)
        second = json.loads((home / "server.json").read_text())
        pids.append(second["pid"])
        assert done.returncode == 0, done.stderr + (home / "server.log").read_text()[-3000:]
        assert "Restarted the idle local Ferry server with the sandbox runtime" in done.stderr
        assert "runs on the sandbox runtime" in done.stderr and "Hello World!" in done.stdout
        assert second["runtime"] == "sandbox" and second["pid"] != first["pid"]
    finally:
        for pid in pids:
            _end(pid)
