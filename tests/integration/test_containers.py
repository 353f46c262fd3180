"""`ferry container list | logs | stop` against a real server and real containers: the list
shows each container's app, function, node, state and inputs served (`--json` keys are a
snapshot), logs are read after the fact and followed live, and a stopped container's inputs
run again elsewhere while it runs @exit. Containers may not use these requests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from ferry._client import Client

from ..conftest import REPO, ServerProcess, run_cli
from ._web import wait_for
from .apps import auth_apps, container_apps

LIST_KEYS = {"id", "app", "app_id", "function", "function_id", "node", "state", "started", "age_seconds",
             "inflight", "served"}


def _containers(server: ServerProcess) -> list[dict[str, Any]]:
    return Client.for_url(server.url).request_sync("container.list", app="container-cmds")


def _logs(server: ServerProcess, container_id: str) -> str:
    result = run_cli(["container", "logs", container_id], server)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_list_stop_and_logs(server: ServerProcess, tmp_path: Path) -> None:
    flag = tmp_path / "go"
    with container_apps.app.run(show_logs=False):
        worker = container_apps.Worker()
        assert worker.say.remote("warm") == "warm"
        call = worker.work.spawn(str(flag), 21)
        busy = wait_for(lambda: [c for c in _containers(server) if c["inflight"] == 1], what="a busy container")[0]

        listed = run_cli(["container", "list", "--json"], server)
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        assert all(set(row) == LIST_KEYS for row in rows)
        row = next(r for r in rows if r["id"] == busy["id"])
        assert row["app"] == "container-cmds" and row["function"] == "Worker" and row["node"] == "local"
        assert row["state"] == "ready" and row["served"] == 1 and row["inflight"] == 1
        assert row["app_id"].startswith("ap-") and row["age_seconds"] >= 0
        assert json.loads(run_cli(["container", "list", "--app", "no-such-app", "--json"], server).stdout) == []

        table = run_cli(["container", "list", "--app", "container-cmds"], server, env={"COLUMNS": "40"})
        assert busy["id"] in table.stdout and "container-cmds" in table.stdout  # full ids when piped

        stopped = run_cli(["container", "stop", busy["id"][:9]], server)  # the start of its id will do
        assert stopped.returncode == 0, stopped.stderr
        assert f"Stopping {busy['id']}; its 1 input went back to the queue." in stopped.stdout
        flag.touch()  # the old container's input returns (ignored), then it runs @exit
        assert call.get(timeout=60) == 42  # run again, on another container
        wait_for(lambda: busy["id"] not in {c["id"] for c in _containers(server)}, what="the container to end")
        replacement = next(c for c in _containers(server) if c["id"] != busy["id"])
        assert replacement["served"] == 1

        old_logs = _logs(server, busy["id"])  # a stopped container's logs are still there
        assert "warm" in old_logs and f"started 21 in {busy['id']}" in old_logs
        assert f"exit ran in {busy['id']}" in old_logs
        assert f"started 21 in {replacement['id']}" in _logs(server, replacement["id"])
        as_json = run_cli(["container", "logs", busy["id"], "--json"], server)
        records = [json.loads(line) for line in as_json.stdout.splitlines()]
        assert records and all(set(r) == {"ts", "function", "container", "stream", "text"} for r in records)
        assert {r["container"] for r in records} == {busy["id"]} and {r["function"] for r in records} == {"Worker"}

        missing = run_cli(["container", "stop", busy["id"]], server)
        assert missing.returncode == 1 and "No running container" in missing.stderr


def test_logs_follow_until_the_container_stops(server: ServerProcess) -> None:
    with container_apps.app.run(show_logs=False):
        worker = container_apps.Worker()
        worker.say.remote("before following")
        container_id = _containers(server)[0]["id"]
        follower = subprocess.Popen([sys.executable, "-m", "ferry", "container", "logs", "--follow", container_id],
                                    cwd=REPO, env=server.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
        try:
            assert follower.stdout is not None
            assert follower.stdout.readline() == "before following\n"  # the history first
            worker.say.remote("while following")
            assert follower.stdout.readline() == "while following\n"  # then live lines
            run_cli(["container", "stop", container_id], server)
            assert follower.wait(timeout=60) == 0  # it ends with the container
            assert f"exit ran in {container_id}" in follower.stdout.read()
        finally:
            if follower.poll() is None:
                follower.kill()
                follower.wait()


def test_containers_may_not_list_read_or_stop_containers(server: ServerProcess) -> None:
    methods = ["container.list", "container.logs", "container.stop"]
    with auth_apps.app.run(show_logs=False):
        outcomes = auth_apps.try_requests.remote(methods)
    assert {kind for kind, _ in outcomes.values()} == {"PermissionDeniedError"}, outcomes
