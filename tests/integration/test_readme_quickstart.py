"""The README's first Quick start command, as a new user runs it: in a fresh clone of this
repository (what is committed, nothing else), with a HOME of its own, Debian's python3, no
FERRY_* variable and no server running, it installs Ferry into the clone's `.venv` and runs
the example, which prints the container's line and the result. (CI runs the second command,
`bash scripts/test.sh`, itself.) pip's download cache is shared with the machine's, so the
packages are not fetched again; the first run in a new HOME builds its own Debian image when
the sandbox runtime can run here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from ..conftest import REPO

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def first_command(readme: Path) -> str:
    """The first line of the first ```bash block of the README's Quick start."""
    section = readme.read_text().split("## Quick start", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return block.splitlines()[0]


def _pip_cache() -> str:
    found = subprocess.run(["python3", "-m", "pip", "cache", "dir"], capture_output=True, text=True)
    return found.stdout.strip() if found.returncode == 0 and found.stdout.strip() else str(Path.home() / ".cache/pip")


@pytest.mark.timeout(600)  # measured: 60-75 s here, pip's cache warm, the sandbox runtime's first image build included
def test_the_first_quick_start_command_works_in_a_fresh_clone(tmp_path: Path) -> None:
    command = first_command(REPO / "README.md")
    assert command == "bash scripts/install.sh && .venv/bin/ferry run examples/hello_world.py"
    clone, home = tmp_path / "ferry", tmp_path / "home"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    home.mkdir()
    env = {"HOME": str(home), "PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "PIP_CACHE_DIR": _pip_cache(),
           "TMPDIR": str(tmp_path), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    assert not any(name.startswith("FERRY_") for name in env)
    try:
        done = subprocess.run(["bash", "-c", command], cwd=clone, env=env, capture_output=True, text=True,
                              timeout=540)
        assert done.returncode == 0, done.stdout + done.stderr
        lines = done.stdout.splitlines()
        assert "Saying hello to World from a container" in lines, done.stdout + done.stderr
        assert lines[-1] == "Hello World!", done.stdout + done.stderr
        assert "App hello-world runs on the " in done.stderr and "View run at http://127.0.0.1:" in done.stderr
    finally:  # the background server `ferry run` started in this HOME
        stopped = subprocess.run([str(clone / ".venv/bin/ferry"), "server", "stop"], cwd=clone, env=env,
                                 capture_output=True, text=True, timeout=60) if (clone / ".venv/bin/ferry").exists() else None
        state = home / ".ferry" / "server.json"
        if state.exists() and (stopped is None or stopped.returncode != 0):
            pid = json.loads(state.read_text()).get("pid")
            if pid:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
