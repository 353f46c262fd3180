"""The test suite does not depend on the environment of whoever runs it: a shell exporting
FERRY_* settings, and a user's own server running on the default ports, change nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ..conftest import REPO

# a part of the suite that starts servers (the session's, its own ones, the CLI's background
# ones), runs the CLI and calls web endpoints
SUBSET = [
    "tests/integration/test_smoke.py",
    "tests/integration/test_web_endpoints.py::test_urls_are_host_based_with_a_path_based_twin",
    "tests/integration/test_cli.py::test_server_start_status_stop",
    "tests/integration/test_cli.py::test_run_starts_a_background_server_when_none_runs",
    "tests/integration/test_server_start.py::test_web_port_taken",
]


def _ferry(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ferry", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def test_suite_passes_with_odd_settings_and_a_user_server(tmp_path: Path):
    user = {key: value for key, value in os.environ.items() if not key.startswith("FERRY_")}
    user.update(HOME=str(tmp_path / "user"), FERRY_RUNTIME="process")  # the user's server: ~/.ferry
    started = _ferry(["server", "start"], user)
    assert started.returncode == 0, started.stderr
    try:
        status = _ferry(["server", "status", "--json"], user)
        assert status.returncode == 0, status.stderr
        mine = json.loads(status.stdout)
        blocker = tmp_path / "a-file"
        blocker.write_text("")
        (tmp_path / "profiles.toml").write_text("this is [not toml\n")
        odd = {
            **user,
            "FERRY_WEB_PORT": str(mine["web_port"]),  # taken, by the user's server
            "FERRY_PORT": mine["url"].rsplit(":", 1)[1],  # taken too
            "FERRY_HOME": str(blocker / "home"),  # cannot be created
            "FERRY_SERVER_URL": mine["url"],  # the user's server
            "FERRY_CONFIG_PATH": str(tmp_path / "profiles.toml"),
            "FERRY_LOG_LEVEL": "loud",
            "FERRY_AUTOSTART": "maybe",
            "FERRY_DEFAULT_TIMEOUT": "soon",
        }
        odd.pop("PYTEST_CURRENT_TEST", None)
        inner = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "inner"),
             *SUBSET], cwd=REPO, env=odd, capture_output=True, text=True, timeout=600)
        assert inner.returncode == 0, inner.stdout[-6000:] + inner.stderr[-3000:]
        assert " passed" in inner.stdout and "error" not in inner.stdout.splitlines()[-1], inner.stdout[-2000:]

        # the user's server is the same process and saw none of the tests' apps
        after = json.loads(_ferry(["server", "status", "--json"], user).stdout)
        assert after["pid"] == mine["pid"]
        apps = _ferry(["app", "list", "--all", "--json"], user)
        assert apps.returncode == 0, apps.stderr
        assert json.loads(apps.stdout) == []
    finally:
        stopped = _ferry(["server", "stop"], user)
        assert stopped.returncode == 0, stopped.stderr
