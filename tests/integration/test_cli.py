"""The `ferry` command line against a real server: `ferry run` (entrypoint options, FILE::NAME
targets, `import modal` scripts, live logs, remote errors, --profile), `--help` everywhere,
`ferry app list/show/logs/stop` on a deployed app, and `ferry server start/status/stop` plus
the background server `ferry run` starts when none is running.

App scripts the CLI runs live in tests/integration/apps/."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

import ferry
from ferry._client import Client

from ..conftest import REPO, run_cli

APPS = "tests/integration/apps"
WIDE = {"COLUMNS": "200"}  # rich tables are not wrapped or truncated


def _lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


# -- ferry run: entrypoints and their options ----------------------------------------------------
def test_run_hello_world_prints_remote_log_and_result(server):
    result = run_cli(["run", "examples/hello_world.py"], server)
    assert result.returncode == 0, result.stderr
    assert "Saying hello to World from a container" in result.stdout
    assert "Hello World!" in result.stdout


def test_run_entrypoint_string_option(server):
    result = run_cli(["run", "examples/hello_world.py", "--who", "Ferry"], server)
    assert result.returncode == 0, result.stderr
    assert "Saying hello to Ferry from a container" in result.stdout
    assert "Hello Ferry!" in result.stdout
    assert "World" not in result.stdout


def test_run_entrypoint_int_and_bool_options(server):
    default = run_cli(["run", f"{APPS}/cli_options.py"], server)
    assert default.returncode == 0, default.stderr
    assert "result: echo echo\n" in default.stdout

    changed = run_cli(["run", f"{APPS}/cli_options.py", "--n", "3", "--loud"], server)
    assert changed.returncode == 0, changed.stderr
    assert "result: ECHO ECHO ECHO\n" in changed.stdout


def test_run_rejects_a_non_integer_for_an_int_option(server):
    result = run_cli(["run", f"{APPS}/cli_options.py", "--n", "many"], server)
    assert result.returncode != 0
    assert "many" in result.stderr
    assert "Error:" in result.stderr


# -- ferry run FILE::NAME ----------------------------------------------------------------------
def test_run_function_directly_prints_its_result(server):
    result = run_cli(["run", f"{APPS}/cli_options.py::triple", "--x", "3"], server)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "9"


def test_run_class_method_directly(server):
    result = run_cli(["run", f"{APPS}/cli_options.py::Greeter.greet", "--name", "Bob"], server)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "greetings, Bob"


def test_run_script_written_with_import_modal(server):
    result = run_cli(["run", f"{APPS}/modal_alias.py", "--x", "6"], server)
    assert result.returncode == 0, result.stderr
    assert "squaring 6 in a container" in result.stdout
    assert "square is 36" in result.stdout


# -- ferry run: logs, errors, profile ----------------------------------------------------------
def test_run_streams_container_logs_while_the_function_runs(server):
    process = subprocess.Popen(
        [sys.executable, "-m", "ferry", "run", f"{APPS}/streaming.py"], cwd=REPO, env=server.env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        seen: list[str] = []
        deadline = time.monotonic() + 60
        while True:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, f"the CLI ended before printing 'first': {seen}"
            seen.append(line)
            if line.strip() == "first":
                break
        # "first" arrived while the function was still sleeping towards "second"
        assert process.poll() is None
        assert "second\n" not in seen
        rest: list[str] = []
        while (line := lines.get(timeout=60)) is not None:
            rest.append(line)
        assert process.wait(timeout=60) == 0, process.stderr.read() if process.stderr else ""
        assert "second\n" in rest
        assert "finished\n" in rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_run_failing_function_reports_error_and_remote_traceback(server):
    result = run_cli(["run", f"{APPS}/failing.py"], server)
    assert result.returncode != 0
    error_lines = _lines_with(result.stderr, "Error: ValueError:")
    assert error_lines == ["Error: ValueError: bad value 42"], result.stderr
    # the remote traceback names the user's frames
    assert "Traceback (most recent call last)" in result.stderr
    assert "in explode" in result.stderr
    assert "in check" in result.stderr
    assert 'raise ValueError(f"bad value {value}")' in result.stderr


def test_run_profile_prints_a_row_per_function(server):
    result = run_cli(["run", "--profile", "examples/hello_world.py"], server, env=WIDE)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    header = _lines_with(output, "container start")
    assert header, output
    columns = [c.strip() for c in header[0].strip("┃│ ").split("┃")]
    assert columns[:5] == ["function", "containers", "container start", "@enter", "calls"], columns
    rows = [line for line in output.splitlines() if line.startswith("│") and "hello" in line]
    assert len(rows) == 1, output
    cells = [c.strip() for c in rows[0].strip("│").split("│")]
    assert cells[0] == "hello"
    assert cells[1] == "1"               # containers started
    assert cells[2].endswith(" ms")      # container start
    assert cells[3].endswith(" ms")      # @enter
    assert cells[4] == "1"               # calls


# -- ferry run: mistakes -----------------------------------------------------------------------
def test_run_unknown_name_lists_the_choices(server):
    result = run_cli(["run", "examples/hello_world.py::nope"], server)
    assert result.returncode != 0
    assert "'nope'" in result.stderr
    assert "Choices: main, hello" in result.stderr


def test_run_missing_file_errors_clearly(server):
    result = run_cli(["run", "no_such_script.py"], server)
    assert result.returncode != 0
    assert "No such file: no_such_script.py" in result.stderr
    assert "Traceback" not in result.stderr


# -- --help --------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [
    [], ["run"], ["deploy"], ["app"], ["app", "list"], ["app", "show"], ["app", "stop"], ["app", "logs"],
    ["server"], ["server", "start"], ["server", "stop"], ["server", "status"], ["server", "gc"],
], ids=lambda c: "ferry " + " ".join(c))
def test_help(server, command):
    result = run_cli([*command, "--help"], server, env=WIDE)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    assert ("ferry " + " ".join(command)).strip() in result.stdout.replace("python -m ferry", "ferry")


def test_run_file_help_shows_the_entrypoint_options(server):
    result = run_cli(["run", f"{APPS}/cli_options.py", "--help"], server, env=WIDE)
    assert result.returncode == 0, result.stderr
    assert "--n" in result.stdout
    assert "--loud" in result.stdout


# -- ferry app -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def deployed(server):
    """`apps/deployable.py` deployed under a unique name, with one call made (so it has logs)."""
    name = f"cli-deployed-{uuid.uuid4().hex[:6]}"
    result = run_cli(["deploy", f"{APPS}/deployable.py", "--name", name], server)
    assert result.returncode == 0, result.stderr
    token = uuid.uuid4().hex
    assert ferry.Function.from_name(name, "shout").remote(token) == token.upper()
    yield name, token
    run_cli(["app", "stop", name], server)


def test_deploy_prints_the_deployed_functions(server):
    name = f"cli-deploy-out-{uuid.uuid4().hex[:6]}"
    result = run_cli(["deploy", f"{APPS}/deployable.py", "--name", name], server)
    try:
        assert result.returncode == 0, result.stderr
        assert f"Deployed app {name}" in result.stdout
        assert "shout" in result.stdout and "whisper" in result.stdout
    finally:
        run_cli(["app", "stop", name], server)


def test_app_list_shows_deployed_app(server, deployed):
    name, _ = deployed
    result = run_cli(["app", "list"], server, env=WIDE)
    assert result.returncode == 0, result.stderr
    rows = [[c.strip() for c in line.strip("│").split("│")] for line in _lines_with(result.stdout, name)]
    assert len(rows) == 1, result.stdout
    assert rows[0][1] == name
    assert rows[0][2] == "deployed"
    assert rows[0][3] == "2"  # functions


def test_app_show_lists_functions(server, deployed):
    name, _ = deployed
    result = run_cli(["app", "show", name], server, env=WIDE)
    assert result.returncode == 0, result.stderr
    assert name in result.stdout.splitlines()[0]
    assert "deployed" in result.stdout.splitlines()[0]
    headings = [line.split()[0] for line in result.stdout.splitlines() if line and not line.startswith(" ")]
    assert "shout" in headings and "whisper" in headings


def test_app_show_unknown_app_errors(server):
    result = run_cli(["app", "show", "no-such-app-anywhere"], server)
    assert result.returncode != 0
    assert "no-such-app-anywhere" in result.stderr
    assert "Error: NotFoundError" in result.stderr


def test_app_logs_prints_what_a_deployed_function_printed(server, deployed):
    name, token = deployed
    deadline = time.monotonic() + 30
    while True:  # logs are written to the store in batches
        result = run_cli(["app", "logs", name], server)
        assert result.returncode == 0, result.stderr
        if f"shouting {token}" in result.stdout or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert f"shouting {token}\n" in result.stdout


def test_app_stop_stops_a_deployed_app(server):
    name = f"cli-stop-{uuid.uuid4().hex[:6]}"
    deployed = run_cli(["deploy", f"{APPS}/deployable.py", "--name", name], server)
    assert deployed.returncode == 0, deployed.stderr
    handle = ferry.Function.from_name(name, "whisper")
    assert handle.remote("QUIET") == "quiet"

    result = run_cli(["app", "stop", name], server)
    assert result.returncode == 0, result.stderr
    assert f"Stopped {name}" in result.stdout

    with pytest.raises(ferry.exception.NotFoundError, match=name):
        ferry.Function.from_name(name, "whisper").remote("QUIET")
    with pytest.raises(ferry.Error, match="stopped"):
        handle.remote("QUIET")  # a handle looked up before the stop
    info = Client.for_url(server.url).request_sync("app.list", all=True)
    assert [row["state"] for row in info if row["name"] == name] == ["stopped"]


# -- ferry server ------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serverless_env(home: Path, port: int) -> dict[str, str]:
    """A fresh FERRY_HOME and port, with no FERRY_SERVER_URL: the CLI finds (or starts) the
    local server itself. The process runtime, as for every server of these tests (conftest)."""
    env = {**os.environ, "FERRY_HOME": str(home), "FERRY_PORT": str(port), "FERRY_WEB_PORT": "0",
           "FERRY_RUNTIME": "process", "PYTHONUNBUFFERED": "1", **WIDE}
    env.pop("FERRY_SERVER_URL", None)
    return env


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ferry", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def _kill_recorded_server(home: Path) -> None:
    """Cleanup after a failed test: stop a server recorded in `home`, if one is still up."""
    try:
        pid = int(json.loads((home / "server.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def serverless(tmp_path):
    home = tmp_path / "home"
    env = _serverless_env(home, _free_port())
    yield home, env
    _cli(["server", "stop"], env)
    _kill_recorded_server(home)


def test_server_start_status_stop(serverless):
    home, env = serverless
    url = f"ferry://127.0.0.1:{env['FERRY_PORT']}"

    before = _cli(["server", "status"], env)
    assert before.returncode != 0
    assert "No Ferry server is running" in before.stdout

    started = _cli(["server", "start"], env)
    assert started.returncode == 0, started.stderr
    assert f"Started a Ferry server at {url}" in started.stdout

    again = _cli(["server", "start"], env)
    assert again.returncode == 0, again.stderr
    assert f"already running at {url}" in again.stdout

    status = _cli(["server", "status"], env)
    assert status.returncode == 0, status.stderr
    assert f"server at {url}" in status.stdout
    assert str(home) in status.stdout
    assert "dashboard: http://127.0.0.1:" in status.stdout

    stopped = _cli(["server", "stop"], env)
    assert stopped.returncode == 0, stopped.stderr
    assert f"Stopped the Ferry server at {url}" in stopped.stdout

    after = _cli(["server", "status"], env)
    assert after.returncode != 0
    assert "No Ferry server is running" in after.stdout


def test_run_starts_a_background_server_when_none_runs(serverless):
    home, env = serverless
    result = _cli(["run", "examples/hello_world.py"], env)
    assert result.returncode == 0, result.stderr
    assert "Hello World!" in result.stdout
    assert result.stderr.count("Started a local Ferry server") == 1, result.stderr
    assert f"ferry://127.0.0.1:{env['FERRY_PORT']}" in result.stderr
    assert "dashboard at http://127.0.0.1:" in result.stderr, result.stderr

    # the server outlives the command, and the next run uses it silently
    second = _cli(["run", "examples/hello_world.py", "--who", "again"], env)
    assert second.returncode == 0, second.stderr
    assert "Hello again!" in second.stdout
    assert "Started a local Ferry server" not in second.stderr
