"""`ferry app logs` prints an app's whole history, however long; `--function`, `--container`
and `--since` select entries, `--timestamps` dates each line."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone

import ferry
from ferry._client import Client

from ..conftest import run_cli

app = ferry.App("test-logs-history")


@app.function()
def chatty(lines: int) -> None:
    for n in range(lines):
        print(f"line {n}")


def test_app_logs_prints_more_than_one_page(server):
    with app.run(show_logs=False):
        chatty.remote(12_000)  # more than one 10,000-entry page of the logs API
    result = run_cli(["app", "logs", "test-logs-history"], server)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("line ")]
    assert lines[0] == "line 0" and lines[-1] == "line 11999"
    assert len(lines) == 12_000


# -- filters and timestamps --------------------------------------------------------------------
filtered = ferry.App("test-logs-filters")


@filtered.function()
def alpha(word: str) -> None:
    print(f"alpha says {word}")


@filtered.function()
def beta(word: str) -> None:
    print(f"beta says {word}")


def _logs(server, *options: str) -> list[str]:
    result = run_cli(["app", "logs", "test-logs-filters", *options], server)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if " says " in line]


def _wait_for(server, line: str) -> None:
    deadline = time.monotonic() + 20
    while line not in _logs(server) and time.monotonic() < deadline:
        time.sleep(0.2)


def test_app_logs_filters_and_timestamps(server):
    with filtered.run(show_logs=False):
        alpha.remote("early")
        beta.remote("early")
        _wait_for(server, "beta says early")
        time.sleep(1.1)
        cut = time.time()
        alpha.remote("late")
        _wait_for(server, "alpha says late")
    every = _logs(server)
    assert every == ["alpha says early", "beta says early", "alpha says late"]

    assert _logs(server, "--function", "alpha") == ["alpha says early", "alpha says late"]
    assert _logs(server, "--function", "nothing-by-that-name") == []

    since = datetime.fromtimestamp(cut).isoformat(timespec="milliseconds")  # local time
    assert _logs(server, "--since", since) == ["alpha says late"]
    assert _logs(server, "--since", datetime.fromtimestamp(cut, timezone.utc).isoformat()) == ["alpha says late"]
    assert _logs(server, "--since", "1h") == every
    assert _logs(server, "--since", "10m", "--function", "beta") == ["beta says early"]

    entries = Client.for_url(server.url).request_sync("app.logs", app="test-logs-filters")["entries"]
    beta_container = next(e["container_id"] for e in entries if "beta says" in e["text"])
    assert _logs(server, "--container", beta_container) == ["beta says early"]
    assert _logs(server, "--container", beta_container[:8], "--function", "beta") == ["beta says early"]

    stamped = _logs(server, "--timestamps", "--function", "beta")
    assert len(stamped) == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z beta says early", stamped[0]), stamped

    as_json = run_cli(["app", "logs", "test-logs-filters", "--json", "--function", "beta"], server)
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [(r["function"], r["container"], r["stream"], r["text"]) for r in records] == [
        ("beta", beta_container, "stdout", "beta says early\n")]
    assert set(records[0]) == {"ts", "function", "container", "stream", "text"} and records[0]["ts"] < cut

    bad = run_cli(["app", "logs", "test-logs-filters", "--since", "yesterday-ish"], server)
    assert bad.returncode == 2 and "--since" in bad.stderr and "Traceback" not in bad.stderr
