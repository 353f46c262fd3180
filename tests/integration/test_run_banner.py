"""`ferry run` (and `app.run()` with logs shown) prints, once, on stderr, the runtime and the
dashboard URL of the run, like the hosted platform's "View run at ..." line; `--quiet` and
`show_logs=False` print nothing of it."""

from __future__ import annotations

import re

import pytest

import ferry
from ferry._client import Client

from ..conftest import ServerProcess, run_cli

BANNER = re.compile(r"^App hello-world runs on the process runtime\. View run at (http://127\.0\.0\.1:(\d+)/apps/(ap-\w+))$",
                    re.M)

app = ferry.App("test-run-banner")


@app.function()
def one() -> int:
    return 1


def test_ferry_run_prints_the_runtime_and_the_runs_dashboard_url_once(server: ServerProcess) -> None:
    result = run_cli(["run", "examples/hello_world.py"], server)
    assert result.returncode == 0, result.stderr
    found = BANNER.findall(result.stderr)
    assert len(found) == 1, result.stderr
    url, port, app_id = found[0]
    status = Client.for_url(server.url).request_sync("server.status")
    assert int(port) == status["web_port"]
    apps = {row["id"]: row["name"] for row in Client.for_url(server.url).request_sync("app.list", all=True)}
    assert apps[app_id] == "hello-world"
    assert "View run at" not in result.stdout

    quiet = run_cli(["run", "--quiet", "examples/hello_world.py"], server)
    assert quiet.returncode == 0 and "View run at" not in quiet.stderr + quiet.stdout


def test_app_run_prints_it_only_when_showing_logs(server: ServerProcess, capsys: pytest.CaptureFixture) -> None:
    with app.run(show_logs=False):
        assert one.remote() == 1
    captured = capsys.readouterr()
    assert "View run at" not in captured.err + captured.out
    with app.run():
        assert one.remote() == 1
    err = capsys.readouterr().err
    assert len(re.findall(r"^App test-run-banner runs on the process runtime\. View run at http://127\.0\.0\.1:\d+/apps/ap-\w+$",
                          err, re.M)) == 1
