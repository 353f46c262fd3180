"""A server that cannot start says why in one or two lines (`ferry server start`, `ferry server`,
and `ferry run` starting one in the background); a traceback, if any, is in server.log only."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from ..conftest import REPO

APP = REPO / "examples" / "hello_world.py"
COMMANDS = {"start": ["server", "start"], "foreground": ["server"], "run": ["run", str(APP)]}


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ferry(args: list[str], home: Path, **settings: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FERRY_HOME": str(home), "FERRY_PORT": str(_free_port()), "FERRY_WEB_PORT": "0",
           "FERRY_RUNTIME": "process", "COLUMNS": "80", **settings}
    env.pop("FERRY_SERVER_URL", None)
    return subprocess.run([sys.executable, "-m", "ferry", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)


def _assert_short_failure(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr
    return result.stderr


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_web_port_taken(command: str, tmp_path: Path, busy_port: int):
    result = _ferry(COMMANDS[command], tmp_path / "home", FERRY_WEB_PORT=str(busy_port))
    _assert_short_failure(result, f"web gateway cannot listen on 127.0.0.1:{busy_port}", "FERRY_WEB_PORT")
    assert not (tmp_path / "home" / "server.json").exists()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_control_plane_port_taken(command: str, tmp_path: Path, busy_port: int):
    result = _ferry(COMMANDS[command], tmp_path / "home", FERRY_PORT=str(busy_port))
    _assert_short_failure(result, f"cannot listen on 127.0.0.1:{busy_port} (the port is taken)", "FERRY_PORT")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_unusable_home(command: str, tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = _ferry(COMMANDS[command], blocker / "home")
    _assert_short_failure(result, f"FERRY_HOME={blocker / 'home'} cannot be used", "Not a directory")


@pytest.mark.parametrize("setting, value, says", [
    ("FERRY_WEB_PORT", "abc", "FERRY_WEB_PORT='abc' is invalid"),
    ("FERRY_PORT", "99999", "FERRY_PORT=99999 is not a port"),
    ("FERRY_RUNTIME", "nope", "Unknown runtime 'nope'"),
    ("FERRY_LOG_LEVEL", "loud", "FERRY_LOG_LEVEL='LOUD' is invalid"),
    ("FERRY_GPUS", "Z80:1", "Invalid GPU type 'Z80'"),
])
def test_bad_setting(setting: str, value: str, says: str, tmp_path: Path):
    for command in ("start", "run"):
        _assert_short_failure(_ferry(COMMANDS[command], tmp_path / "home", **{setting: value}), says)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_internal_error_keeps_its_traceback_in_the_log(command: str, tmp_path: Path):
    home = tmp_path / "home"
    (home / "state.db").mkdir(parents=True)  # the database cannot be opened
    result = _ferry(COMMANDS[command], home)
    _assert_short_failure(result, "internal error: OperationalError: unable to open database file",
                          str(home / "server.log"))
    log = (home / "server.log").read_text()
    assert "Traceback (most recent call last)" in log and "sqlite3.OperationalError" in log
