"""Finding the control plane, and starting a local one in the background when none runs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import _config
from ._protocol import parse_url
from .exception import ConnectionError

STATE_FILE = "server.json"
START_TIMEOUT = 20.0


def read_state(home: Path) -> dict | None:
    try:
        return json.loads((home / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def reachable(url: str, timeout: float = 1.0) -> bool:
    try:
        host, port = parse_url(url)
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def running_server_url(home: Path | None = None) -> str | None:
    """The URL of the local server recorded under FERRY_HOME, if it answers."""
    state = read_state(home or _config.home())
    if state and reachable(state["url"]):
        return state["url"]
    return None


def start_background_server(home: Path | None = None) -> str:
    """Start `ferry server` detached from this process; return its URL once it answers."""
    home = home or _config.home()
    log_path = home / "server.log"
    stale = read_state(home)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ferry.server", "--fallback-port"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True, env={**os.environ, "FERRY_HOME": str(home)},
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        state = read_state(home)
        if state and state != stale and state.get("pid") == process.pid and reachable(state["url"]):
            return state["url"]
        if process.poll() is not None:
            break
        time.sleep(0.05)
    tail = log_path.read_text(errors="replace").splitlines()[-15:]
    raise ConnectionError(
        "Could not start a local Ferry server. Its log " f"({log_path}) ends with:\n" + "\n".join(tail)
    )


def resolve_server_url(*, announce: bool = True) -> str:
    """The server to talk to: FERRY_SERVER_URL, else the local one (started if allowed)."""
    url = _config.get("server_url")
    if url:
        return url
    home = _config.home()
    found = running_server_url(home)
    if found:
        return found
    if not _config.get("autostart"):
        raise ConnectionError(
            "No Ferry server is running. Start one with `ferry server start`, or set "
            "FERRY_SERVER_URL to the address of a running server."
        )
    url = start_background_server(home)
    if announce:
        web_url = (read_state(home) or {}).get("web_url")
        dashboard = f", dashboard at {web_url}/" if web_url else ""
        print(f"Started a local Ferry server at {url} (state in {home}, log in "
              f"{home / 'server.log'}{dashboard}). Stop it with `ferry server stop`.", file=sys.stderr)
    return url
