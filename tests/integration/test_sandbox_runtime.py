# Host packages these tests need (Debian 12, as root): bubblewrap, mmdebstrap, uidmap (see
# scripts/test.sh), cgroups with the memory controller, and overlayfs.
"""The sandbox runtime with real containers: isolation from the host, a private writable
layer, memory limits, graceful stops."""

from __future__ import annotations

import subprocess
import time

import pytest

import ferry
from ferry._client import Client
from ferry._sync import run_sync
from ferry.exception import OutOfMemoryError

from ..conftest import REPO, ServerProcess, run_cli
from .apps import sandbox_apps


def test_function_cannot_see_host_files_or_processes(on_sandbox: ServerProcess, tmp_path) -> None:
    secret = tmp_path / "host-secret.txt"
    secret.write_text("only on the host")
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        host_paths = [str(secret), str(REPO / "README.md"), str(on_sandbox.home / "state.db"), "/etc/hostname"]
        with sandbox_apps.app.run(show_logs=False):
            seen = sandbox_apps.visible.remote(host_paths)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert seen["paths"] == {**{p: False for p in host_paths[:3]}, "/etc/hostname": True}
    commands = " | ".join(seen["processes"].values())
    assert "sleep 300" not in commands and "ferry.server" not in commands
    assert set(seen["processes"]) == {1, 2}, seen["processes"]  # bwrap's init and the container
    assert "ferry._container" in seen["processes"][2]
    assert seen["hostname"] == "ferry"
    assert seen["tmp"] == []  # a private /tmp


def test_writes_are_private_to_the_container_and_discarded(on_sandbox: ServerProcess) -> None:
    with sandbox_apps.app.run(show_logs=False):
        assert sandbox_apps.write_then_read.remote("/etc/ferry-written", "one") == (False, "one")
    with sandbox_apps.app.run(show_logs=False):  # a new container: the image is unchanged
        assert sandbox_apps.write_then_read.remote("/etc/ferry-written", "two") == (False, "two")


def test_memory_limit_kills_the_container_with_an_error_naming_the_limit(on_sandbox: ServerProcess) -> None:
    with sandbox_apps.app.run(show_logs=False):
        assert sandbox_apps.allocate.remote(16) == 16
        with pytest.raises(OutOfMemoryError, match="memory limit of 128 MiB"):
            sandbox_apps.allocate.remote(512)


def test_stopping_the_app_runs_exit_hooks_inside_the_sandbox(on_sandbox: ServerProcess) -> None:
    with sandbox_apps.app.run(show_logs=False):
        sandbox_apps.WithExit().ping.remote()
        app_id = sandbox_apps.app.app_id
    client = run_sync(Client.from_env())
    deadline = time.monotonic() + 15
    texts: list[str] = []
    while time.monotonic() < deadline:
        entries = run_sync(client.request("app.logs", app=app_id))["entries"]
        texts = [e["text"] for e in entries]
        if any("exit hook ran in the sandbox" in t for t in texts):
            break
        time.sleep(0.1)
    assert any("exit hook ran in the sandbox" in t for t in texts), texts


def test_deployed_app_builds_with_progress_and_runs_after_a_server_restart(tmp_path, monkeypatch) -> None:
    home = tmp_path / "home"
    first = ServerProcess.start(home, extra_env={"FERRY_RUNTIME": "sandbox"})
    try:
        deployed = run_cli(["deploy", str(REPO / "tests/integration/apps/sandbox_apps.py"),
                            "--name", "sandbox-restart"], first)
        assert deployed.returncode == 0, deployed.stderr
        assert "Building image" in deployed.stderr and "ferry runtime" in deployed.stderr
    finally:
        first.stop()
    second = ServerProcess.start(home, extra_env={"FERRY_RUNTIME": "sandbox"})
    try:
        second.use(monkeypatch)
        visible = ferry.Function.from_name("sandbox-restart", "visible")
        assert visible.remote(["/etc/debian_version"])["paths"] == {"/etc/debian_version": True}
    finally:
        second.stop()
