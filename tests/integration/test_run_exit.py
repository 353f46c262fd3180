"""`raise SystemExit(...)` (or `sys.exit`) in a local entrypoint ends `ferry run` as it ends
Python: with that status, no traceback; a message is printed to stderr and the status is 1."""

from __future__ import annotations

import pytest

from ferry._client import Client

from ..conftest import run_cli

SCRIPT = "tests/integration/apps/system_exit.py"


@pytest.mark.parametrize("how, status", [("one", 1), ("zero", 0), ("none", 0), ("three", 3), ("msg", 1)])
def test_system_exit_sets_the_status(server, how: str, status: int):
    result = run_cli(["run", SCRIPT, "--how", how], server)
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr and "Error" not in result.stderr, result.stderr
    if how == "msg":
        assert result.stderr.strip().splitlines()[-1] == "something went wrong"
    else:
        assert "something went wrong" not in result.stderr


def test_the_app_is_stopped_after_system_exit(server):
    assert run_cli(["run", SCRIPT, "--how", "three"], server).returncode == 3
    rows = Client.for_url(server.url).request_sync("app.list", all=True)
    assert [row["state"] for row in rows if row["name"] == "sysexit"][-1] == "stopped"
