"""Deployed apps: `app.deploy()` / `ferry deploy`, lookups with `Function.from_name` and
`Cls.from_name` (in-process and from another process), redeploying changed code, lookup
errors, `update_autoscaler`, and durability across server restarts (deployed apps, and spawned
calls that had not finished when the server was killed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

import ferry
from ferry._client import Client

from ..conftest import ServerProcess, run_cli

deploy_app = ferry.App("test-deploy")


@deploy_app.function()
def double(x: int) -> int:
    return 2 * x


@deploy_app.cls()
class Model:
    @ferry.method()
    def predict(self, x: int) -> str:
        return f"predicted {x}"


scaler_app = ferry.App("test-deploy-scaler")


@scaler_app.function()
def idle_fn() -> int:
    return os.getpid()


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _wait_for(condition, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def _python(code: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def _write_app(directory: Path, module: str, source: str) -> Path:
    path = directory / f"{module}.py"
    path.write_text(textwrap.dedent(source))
    return path


@pytest.fixture
def deployed_name(server):
    """A unique name for a deployment, stopped after the test."""
    name = _unique("test-deploy")
    yield name
    try:
        Client.for_url(server.url).request_sync("app.stop", app=name, reason="test finished")
    except ferry.Error:
        pass


# -- deploy and look up -----------------------------------------------------------------------
def test_deployed_function_callable_in_process(server, deployed_name):
    result = deploy_app.deploy(name=deployed_name)
    assert set(result["objects"]) == {"double", "Model"}
    assert ferry.Function.from_name(deployed_name, "double").remote(21) == 42


def test_deployed_function_callable_from_another_process(server, deployed_name, tmp_path):
    deploy_app.deploy(name=deployed_name)
    result = _python(f"""
        import ferry
        print(ferry.Function.from_name({deployed_name!r}, "double").remote(5))
    """, server.env(), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "10"


def test_deployed_class_callable_by_name(server, deployed_name, tmp_path):
    deploy_app.deploy(name=deployed_name)
    assert ferry.Cls.from_name(deployed_name, "Model")().predict.remote(3) == "predicted 3"
    result = _python(f"""
        import ferry
        print(ferry.Cls.from_name({deployed_name!r}, "Model")().predict.remote(4))
    """, server.env(), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "predicted 4"


def test_cli_deploy_then_call_by_name(server, deployed_name, tmp_path):
    script = _write_app(tmp_path, "cli_deployed", """
        import ferry

        app = ferry.App("cli-deployed")

        @app.function()
        def greet(who: str) -> str:
            return f"hi {who}"
    """)
    deployed = run_cli(["deploy", str(script), "--name", deployed_name], server, cwd=tmp_path)
    assert deployed.returncode == 0, deployed.stderr
    assert ferry.Function.from_name(deployed_name, "greet").remote("there") == "hi there"


def test_redeploy_serves_the_new_code(server, deployed_name, tmp_path):
    source = """
        import ferry

        app = ferry.App("versioned")

        @app.function()
        def version() -> str:
            return "{version}"
    """
    script = _write_app(tmp_path, "versioned", source.replace("{version}", "v1"))
    first = run_cli(["deploy", str(script), "--name", deployed_name], server, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    handle = ferry.Function.from_name(deployed_name, "version")
    assert handle.remote() == "v1"

    _write_app(tmp_path, "versioned", source.replace("{version}", "v2"))
    second = run_cli(["deploy", str(script), "--name", deployed_name], server, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert handle.remote() == "v2"  # a handle looked up before the redeploy
    assert ferry.Function.from_name(deployed_name, "version").remote() == "v2"


def test_from_name_missing_app_raises_not_found(server):
    with pytest.raises(ferry.exception.NotFoundError, match="no-such-deployed-app"):
        ferry.Function.from_name("no-such-deployed-app", "double").remote(1)


def test_from_name_missing_function_raises_not_found(server, deployed_name):
    deploy_app.deploy(name=deployed_name)
    with pytest.raises(ferry.exception.NotFoundError, match="no_such_function") as info:
        ferry.Function.from_name(deployed_name, "no_such_function").remote(1)
    assert deployed_name in str(info.value)


def test_update_autoscaler_min_containers_starts_a_container(server):
    name = _unique("test-deploy-scaler")
    scaler_app.deploy(name=name)
    client = Client.for_url(server.url)

    def containers() -> list[dict]:
        (fn,) = client.request_sync("app.show", app=name)["functions"]
        return fn["containers"]

    try:
        assert containers() == []
        ferry.Function.from_name(name, "idle_fn").update_autoscaler(min_containers=1)
        ready = _wait_for(lambda: [c for c in containers() if c["state"] == "ready"],
                          "a container started by min_containers=1")
        assert len(ready) == 1
        (fn,) = client.request_sync("app.show", app=name)["functions"]
        assert fn["stats"]["exec_count"] == 0
        assert fn["overrides"] == {"min_containers": 1}
    finally:
        client.request_sync("app.stop", app=name, reason="test finished")


# -- server restarts -------------------------------------------------------------------------
def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def own_servers():
    """Servers a test starts itself; all stopped afterwards."""
    started: list[ServerProcess] = []
    yield started
    for proc in started:
        proc.stop()


def test_server_restart_keeps_deployed_apps(tmp_path, own_servers, monkeypatch):
    home = tmp_path / "home"
    first = ServerProcess.start(home)
    own_servers.append(first)
    script = _write_app(tmp_path, "durable", """
        import ferry

        app = ferry.App("durable")

        @app.function()
        def add(a: int, b: int) -> int:
            return a + b
    """)
    deployed = run_cli(["deploy", str(script), "--name", "durable"], first, cwd=tmp_path)
    assert deployed.returncode == 0, deployed.stderr
    first.stop(signal.SIGTERM)

    second = ServerProcess.start(home)
    own_servers.append(second)
    second.use(monkeypatch)
    monkeypatch.setenv("FERRY_HOME", str(home))
    assert ferry.Function.from_name("durable", "add").remote(2, 3) == 5


def test_server_restart_keeps_unfinished_spawned_calls(tmp_path, own_servers, monkeypatch):
    home = tmp_path / "home"
    signals = tmp_path / "signals"
    signals.mkdir()
    first = ServerProcess.start(home)
    own_servers.append(first)
    script = _write_app(tmp_path, "spawner", """
        import os
        import time
        from pathlib import Path

        import ferry

        app = ferry.App("spawner")

        @app.function()
        def slow_write(directory: str) -> str:
            with open(Path(directory) / "started", "a") as f:
                f.write(f"{os.getpid()}\\n")
            time.sleep(2)
            (Path(directory) / "done").write_text("done")
            return "finished"
    """)
    deployed = run_cli(["deploy", str(script), "--name", "spawner"], first, cwd=tmp_path)
    assert deployed.returncode == 0, deployed.stderr

    first.use(monkeypatch)
    monkeypatch.setenv("FERRY_HOME", str(home))
    call = ferry.Function.from_name("spawner", "slow_write").spawn(str(signals))
    _wait_for(lambda: (signals / "started").exists(), "the spawned call to start")
    old_containers = _children(first.process.pid)
    assert old_containers, "the running container should be a child of the server"

    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.wait()
    assert not (signals / "done").exists(), "the call finished before the server was killed"
    try:
        # a container of the dead server exits once its connection is gone
        _wait_for(lambda: not any(_alive(p) for p in old_containers),
                  "containers of the killed server to exit", timeout=15)
    finally:
        for leaked in old_containers:
            if _alive(leaked):
                os.kill(leaked, signal.SIGKILL)

    second = ServerProcess.start(home, port=first.port)
    own_servers.append(second)
    assert second.url == first.url
    assert ferry.FunctionCall.from_id(call.object_id).get(timeout=60) == "finished"
    assert (signals / "done").read_text() == "done"
    runs = (signals / "started").read_text().split()
    assert len(runs) == 2  # interrupted once, run again to completion by the new server
