"""`--json` on the CLI's list and show commands: one JSON document with stable keys (these tests
are their snapshot: a key renamed or dropped breaks scripts), and plain output that scripts can
read too (full ids and names, hints never broken inside a command) when stdout is not a terminal."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

import ferry

from ..conftest import run_cli

APPS = "tests/integration/apps"
NARROW = {"COLUMNS": "40"}  # a narrow terminal width must not matter when stdout is a pipe

APP_KEYS = {"app_id", "name", "state", "functions", "containers", "created", "stopped"}
SHOW_KEYS = {"app_id", "name", "state", "created", "functions"}
FUNCTION_KEYS = {"tag", "function_id", "kind", "bound", "web_url", "web_path_url", "web_methods", "settings",
                 "schedule", "queued", "containers", "stats", "init_error"}
CONTAINER_KEYS = {"id", "state", "inflight", "boot_seconds", "enter_seconds", "node"}
STATS_KEYS = {"containers_started", "boot_mean", "enter_mean", "exec_count", "exec_mean", "exec_max"}
STATUS_KEYS = {"running", "version", "url", "pid", "home", "runtime", "web_url", "web_port", "gpus", "started",
               "apps", "containers", "space"}
IMAGE_LIST_KEYS = {"runtime", "images", "layers_bytes", "bases"}
IMAGE_KEYS = {"key", "label", "state", "python_version", "size", "created", "last_used", "steps", "last_step"}


def _json(server, *args: str) -> Any:
    result = run_cli([*args, "--json"], server, env=NARROW)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def deployed(server):
    name = f"cli-json-{uuid.uuid4().hex}-with-a-rather-long-name"
    result = run_cli(["deploy", f"{APPS}/deployable.py", "--name", name], server, env=NARROW)
    assert result.returncode == 0, result.stderr
    assert ferry.Function.from_name(name, "shout").remote("x") == "X"
    yield name, result
    run_cli(["app", "stop", name], server)


def test_app_list_and_show(server, deployed):
    name, _ = deployed
    rows = _json(server, "app", "list")
    assert isinstance(rows, list) and all(set(row) == APP_KEYS for row in rows)
    row = next(r for r in rows if r["name"] == name)
    assert row["state"] == "deployed" and row["functions"] == 2 and row["app_id"].startswith("ap-")
    assert isinstance(row["created"], float) and row["stopped"] is None

    info = _json(server, "app", "show", name)
    assert set(info) == SHOW_KEYS and info["app_id"] == row["app_id"] and info["name"] == name
    assert sorted(fn["tag"] for fn in info["functions"]) == ["shout", "whisper"]
    for fn in info["functions"]:
        assert set(fn) == FUNCTION_KEYS and set(fn["stats"]) == STATS_KEYS
        assert isinstance(fn["settings"], dict) and isinstance(fn["queued"], int)
        assert all(set(c) == CONTAINER_KEYS for c in fn["containers"])
    shout = next(fn for fn in info["functions"] if fn["tag"] == "shout")
    assert shout["stats"]["exec_count"] == 1 and shout["web_url"] is None


def test_plain_output_keeps_full_names_and_hints_when_piped(server, deployed):
    name, deploy = deployed
    hints = [line for line in deploy.stdout.splitlines() if "ferry app stop" in line]
    assert hints and hints[0].endswith(f"stop it with `ferry app stop {name}`."), deploy.stdout
    listed = run_cli(["app", "list"], server, env=NARROW)
    line = next(line for line in listed.stdout.splitlines() if name in line)
    app_id = _json(server, "app", "show", name)["app_id"]
    assert app_id in line and "deployed" in line


def test_secret_token_volume_lists(server, tmp_path):
    secret = f"json-secret-{uuid.uuid4().hex[:8]}"
    canary = uuid.uuid4().hex
    assert run_cli(["secret", "create", secret, f"A={canary}"], server).returncode == 0
    rows = _json(server, "secret", "list")
    assert all(set(row) == {"name", "created", "updated"} for row in rows)
    assert secret in [row["name"] for row in rows]
    assert canary not in json.dumps(rows)  # values are never listed

    created = run_cli(["token", "create", "--name", "json-test"], server)
    assert created.returncode == 0, created.stderr
    tokens = _json(server, "token", "list")
    assert all(set(row) == {"token_id", "name", "created"} for row in tokens)
    assert "json-test" in [row["name"] for row in tokens]
    assert all("secret" not in key for row in tokens for key in row)

    volume = f"json-vol-{uuid.uuid4().hex[:8]}"
    assert run_cli(["volume", "create", volume], server).returncode == 0
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "hello.txt").write_text("hello")
    assert run_cli(["volume", "put", volume, str(tmp_path / "data"), "/in"], server).returncode == 0
    volumes = _json(server, "volume", "list")
    assert all(set(row) == {"name", "version", "files", "bytes", "created", "updated"} for row in volumes)
    mine = next(row for row in volumes if row["name"] == volume)
    assert mine["files"] >= 1 and mine["bytes"] == 5 and mine["version"] == 1
    listing = _json(server, "volume", "ls", volume, "/", "--recursive")
    assert all(set(row) == {"path", "type", "size", "mtime"} for row in listing)
    assert {(row["path"], row["type"]) for row in listing} >= {("in", "directory"), ("in/hello.txt", "file")}


def test_image_build_list_logs_and_server_status(server):
    built = run_cli(["image", "build", f"{APPS}/image_process.py::venv_image"], server, env=NARROW)
    assert built.returncode == 0, built.stderr
    assert "Collecting six" not in built.stderr  # pip's output is in `ferry image logs`, not here
    images = _json(server, "image", "list")
    assert set(images) == IMAGE_LIST_KEYS and isinstance(images["images"], list) and images["images"]
    assert all(set(record) == IMAGE_KEYS for record in images["images"])
    assert all(len(record["key"]) > 12 for record in images["images"])  # full keys
    plain = run_cli(["image", "list"], server, env=NARROW)
    assert all(record["key"] in plain.stdout for record in images["images"])

    key = next(record["key"] for record in images["images"] if record["key"][:12] in built.stdout)
    logs = _json(server, "image", "logs", key[:12])
    assert set(logs) == {"key", "label", "state", "error", "steps"} and logs["key"] == key
    assert logs["steps"] and all(set(step) == {"key", "label", "log"} for step in logs["steps"])
    assert any("six==1.16.0" in (step["log"] or "") for step in logs["steps"])

    status = _json(server, "server", "status")
    assert set(status) == STATUS_KEYS and status["running"] is True
    assert status["url"] == server.url and status["home"] == str(server.home)


def test_server_status_json_when_none_runs(server, tmp_path):
    result = run_cli(["server", "status", "--json"], server, env={"FERRY_SERVER_URL": "", "FERRY_HOME": str(tmp_path)})
    assert result.returncode == 1
    status = json.loads(result.stdout)
    assert set(status) == STATUS_KEYS and status["running"] is False and status["home"] == str(tmp_path)
    assert status["url"] is None and status["pid"] is None
