"""Cold starts: `ferry run --profile` and `ferry app show` report a container start (process
start, import, connect) and an @enter time that are plausible; in the process runtime new
containers are forked from a zygote that has already imported Ferry, and still see their own
environment, a fresh `random` state and `sys.path[0]`; FERRY_ZYGOTE=0 turns that off; a zygote
that dies takes its containers down and later starts go on without it."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

import ferry
from ferry._client import Client

from ..conftest import ServerProcess, run_cli

APP = "tests/integration/apps/slow_enter.py"
WIDE = {"COLUMNS": "200"}  # rich tables are not wrapped or truncated
ENTER_SECONDS = 0.3  # what apps/slow_enter.py sleeps in @enter


def _milliseconds(cell: str) -> float:
    match = re.fullmatch(r"([0-9.]+) ms", cell.strip())
    assert match, cell
    return float(match.group(1))


def test_run_profile_reports_plausible_start_and_enter_times(server):
    result = run_cli(["run", "--profile", APP], server, env=WIDE)
    assert result.returncode == 0, result.stderr
    assert "prediction 42" in result.stdout
    output = result.stdout + result.stderr
    rows = [line for line in output.splitlines() if line.startswith("│") and "Model" in line]
    assert len(rows) == 1, output
    cells = [c.strip() for c in rows[0].strip("│").split("│")]
    start, enter = _milliseconds(cells[2]), _milliseconds(cells[3])
    assert 0 < start < 5000, cells              # a process start, not zero, not minutes
    assert ENTER_SECONDS * 1000 <= enter < ENTER_SECONDS * 1000 + 3000, cells
    assert start < enter + 5000


def test_app_show_reports_plausible_start_and_enter_times(server):
    deployed = run_cli(["deploy", APP, "--name", "cold-start-shown"], server)
    assert deployed.returncode == 0, deployed.stderr
    try:
        model_cls = ferry.Cls.from_name("cold-start-shown", "Model")
        assert model_cls().predict.remote(4) == 8
        info = Client.for_url(server.url).request_sync("app.show", app="cold-start-shown")
        containers = [c for f in info["functions"] for c in f["containers"]]
        assert containers, info
        for container in containers:
            assert 0 < container["boot_seconds"] < 5, container
            assert ENTER_SECONDS <= container["enter_seconds"] < ENTER_SECONDS + 3, container
        shown = run_cli(["app", "show", "cold-start-shown"], server, env=WIDE)
        assert shown.returncode == 0, shown.stderr
        match = re.search(r"mean start (\d+) ms, @enter (\d+) ms", shown.stdout)
        assert match, shown.stdout
        start_ms, enter_ms = int(match.group(1)), int(match.group(2))
        assert 0 < start_ms < 5000, shown.stdout
        assert ENTER_SECONDS * 1000 <= enter_ms < ENTER_SECONDS * 1000 + 3000, shown.stdout
        assert re.search(r"start \d+ ms", shown.stdout)  # per container too
    finally:
        run_cli(["app", "stop", "cold-start-shown"], server)


# -- containers forked from a zygote (process runtime) ------------------------------------------
app = ferry.App("test-cold-start")


@app.function(secrets=[ferry.Secret.from_dict({"FERRY_TEST_MARKER": "from a secret"})], max_containers=2)
def lineage(seconds: float = 0) -> dict:
    import random
    import sys
    import time

    time.sleep(seconds)
    return {"pid": os.getpid(), "ppid": os.getppid(), "random": random.random(), "cwd": os.getcwd(),
            "path": sys.path[:2], "marker": os.environ.get("FERRY_TEST_MARKER"),
            "main": sys.modules["__main__"].__dict__.get("main")}


def _forked_lineage(server_pid: int) -> dict:
    """Run `lineage` in fresh containers until one was forked by a zygote (the first container
    of an interpreter starts the plain way while its zygote starts)."""
    deadline = time.monotonic() + 30
    while True:
        with app.run(show_logs=False):
            info = lineage.remote()
        if info["ppid"] != server_pid:
            return info
        assert time.monotonic() < deadline, "no container was forked from a zygote"
        time.sleep(0.2)


def test_containers_are_forked_from_a_zygote_and_look_freshly_started(server):
    info = _forked_lineage(server.process.pid)
    assert info["marker"] == "from a secret"   # the container's own environment
    assert info["path"][1] == info["cwd"]      # after the code mount: the cwd, as `python -m` puts it
    assert info["main"] is None                # not the zygote's __main__
    with app.run(show_logs=False):
        pair = list(lineage.map([1.0, 1.0]))
    assert len({p["pid"] for p in pair}) == 2, pair
    assert {p["ppid"] for p in pair} == {info["ppid"]}, pair  # both from the same zygote
    assert pair[0]["random"] != pair[1]["random"]             # random reseeded after fork


def test_without_zygote_containers_are_started_by_the_server(tmp_path, monkeypatch):
    other = ServerProcess.start(tmp_path / "home", extra_env={"FERRY_ZYGOTE": "0"})
    try:
        other.use(monkeypatch)
        for _ in range(2):
            with app.run(show_logs=False):
                info = lineage.remote()
            assert info["ppid"] == other.process.pid
            assert info["marker"] == "from a secret"
            assert info["path"][1] == info["cwd"]  # as in a forked container
    finally:
        other.stop()


def test_a_dead_zygote_takes_its_containers_down_and_starts_are_not_blocked(tmp_path, monkeypatch):
    other = ServerProcess.start(tmp_path / "home")
    try:
        other.use(monkeypatch)
        zygote = _forked_lineage(other.process.pid)["ppid"]
        with app.run(show_logs=False):
            running = lineage.spawn(30)
            info = Client.for_url(other.url).request_sync("app.show", app=app.app_id)
            deadline = time.monotonic() + 30
            while not any(c["inflight"] for f in info["functions"] for c in f["containers"]):
                assert time.monotonic() < deadline
                time.sleep(0.05)
                info = Client.for_url(other.url).request_sync("app.show", app=app.app_id)
            os.kill(zygote, signal.SIGKILL)
            with pytest.raises(Exception, match="container"):  # its container was killed with it
                running.get(timeout=30)
            after = lineage.remote()  # a new container starts the plain way
        assert after["ppid"] == other.process.pid
    finally:
        other.stop()
