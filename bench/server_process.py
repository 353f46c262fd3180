"""Start and stop a throwaway `ferry server` for the benchmark."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(home: Path, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    log = open(home / "server.log", "ab")
    # the process runtime unless FERRY_RUNTIME says otherwise (`auto` may pick the sandbox)
    env = {"FERRY_RUNTIME": "process", **os.environ, "FERRY_HOME": str(home),
           "FERRY_WEB_PORT": str(_free_port()), **(extra_env or {})}  # never a user's server's port
    env.pop("FERRY_SERVER_URL", None)
    process = subprocess.Popen([sys.executable, "-m", "ferry.server", "--port", "0"], env=env,
                               stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            state = json.loads((home / "server.json").read_text())
            if state["pid"] == process.pid:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    else:
        raise RuntimeError("ferry server did not start")

    def stop() -> None:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(20)

    return {"url": state["url"], "stop": stop}
