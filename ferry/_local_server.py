"""Finding the control plane, and starting a local one in the background when none runs."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import _config
from ._protocol import parse_url
from .exception import ConnectionError, InvalidError

STATE_FILE = "server.json"
LOG_FILE = "server.log"
START_TIMEOUT = 20.0
FAILURE_PREFIX = "ferry server: "  # how the server process says, in its log, why it stopped


def usable_home() -> Path:
    """FERRY_HOME, created if needed; an InvalidError saying so when it cannot be written to."""
    path: Path = _config.get("home")
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):  # (also false on a read-only file system)
            raise PermissionError(errno.EACCES, "not writable")
    except OSError as exc:
        raise InvalidError(f"FERRY_HOME={path} cannot be used as the server's state directory "
                           f"({exc.strerror or exc}). Set FERRY_HOME to a directory you can write to.") from None
    return path


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
    """Start `ferry server` detached from this process; return its URL once it answers.

    If it does not start, the ConnectionError's one-line message is the cause the server wrote
    to its log (the traceback, if any, stays in the log)."""
    home = home or usable_home()
    log_path = home / LOG_FILE
    stale = read_state(home)
    try:
        log = open(log_path, "ab")
    except OSError as exc:
        raise InvalidError(f"Cannot write the server's log {log_path} ({exc.strerror or exc}). "
                           "Set FERRY_HOME to a directory you can write to.") from None
    start_offset = log.tell()
    with log:
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
    else:
        raise ConnectionError(f"The local Ferry server did not answer within {START_TIMEOUT:.0f} s of starting "
                              f"(pid {process.pid}); see its log {log_path}.")
    cause = failure_cause(log_path, start_offset) or f"it exited with status {process.returncode}"
    where = "" if str(log_path) in cause else f" (log: {log_path})"
    raise ConnectionError(f"Could not start a local Ferry server: {cause}{where}")


def failure_cause(log_path: Path, offset: int = 0) -> str | None:
    """The one-line reason a server gave for stopping, from what it wrote to its log after
    `offset`; else the last line it wrote there."""
    try:
        with open(log_path, "rb") as handle:
            handle.seek(offset)
            lines = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith(FAILURE_PREFIX):
            return line[len(FAILURE_PREFIX):].strip()
    lines = [line.strip() for line in lines if line.strip()]
    return lines[-1] if lines else None


def resolve_server_url(*, announce: bool = True) -> str:
    """The server to talk to: FERRY_SERVER_URL, else the local one (started if allowed)."""
    url = _config.get("server_url")
    if url:
        return url
    home = usable_home()
    found = running_server_url(home)
    if found:
        return switch_runtime_if_idle(home, found, announce=announce)
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
              f"{home / LOG_FILE}{dashboard}). Stop it with `ferry server stop`.", file=sys.stderr)
    return url


def runtime_note(info: dict) -> str | None:
    """What to say when a server's runtime is not the one FERRY_RUNTIME=auto would pick now
    (its `server.status`): the sandbox's packages were installed, or removed, since it started."""
    now, current = info.get("runtime_now"), info.get("runtime")
    if info.get("runtime_setting") != "auto" or not now or now == current:
        return None
    if now == "sandbox":
        return (f"The server runs the {current} runtime: it started before the sandbox runtime could run "
                "here. To switch, stop it (`ferry server stop`) and run again; a `ferry run` restarts an idle "
                "background server by itself.")
    return (f"The server runs the {current} runtime, which cannot start containers here now "
            f"({info.get('runtime_now_reason')}). Fix that, or restart it (`ferry server stop`, then run "
            f"again) to use the {now} runtime.")


def _sandbox_tools_present() -> bool:
    """A cheap first look (no import of the server) at whether the sandbox could run now."""
    import shutil

    return os.geteuid() == 0 and all(shutil.which(tool) for tool in ("bwrap", "mmdebstrap", "pasta"))


def switch_runtime_if_idle(home: Path, url: str, *, announce: bool = True) -> str:
    """The local server at `url`, or a new one: a background server (one a client started) that
    FERRY_RUNTIME=auto started on the process runtime before the sandbox's packages were
    installed is restarted (with the sandbox runtime) when it has no live app and no container;
    a busy one, or one run in the foreground, keeps running and the client says how to switch."""
    from ._client import Client
    from ._sync import run_sync

    state = read_state(home) or {}
    if state.get("runtime_setting") != "auto" or state.get("runtime") != "process" or not _sandbox_tools_present():
        return url
    client = Client.for_url(url)
    info = client.request_sync("server.status")
    note = runtime_note(info)
    if note is None:
        return url
    # busy, or run by someone in a terminal (not started by a client): never stopped from here
    if info.get("apps") or info.get("containers") or not state.get("background"):
        if announce:
            print(f"Note: {note}", file=sys.stderr)
        return url
    run_sync(client.close())  # (a new server may listen at the same address)
    try:
        os.kill(int(state["pid"]), signal.SIGTERM)
    except (ProcessLookupError, KeyError, ValueError):
        return url
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and reachable(url, timeout=0.2):
        time.sleep(0.05)
    new_url = start_background_server(home)
    if announce:
        runtime = (read_state(home) or {}).get("runtime", "sandbox")
        print(f"Restarted the idle local Ferry server with the {runtime} runtime (it had started before "
              f"the sandbox runtime could run here); now at {new_url}.", file=sys.stderr)
    return new_url
