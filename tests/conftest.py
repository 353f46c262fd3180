"""Shared fixtures. Integration tests talk to a real `ferry server` subprocess (one per test
session, with its own FERRY_HOME) that starts real container processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parent.parent
# The tests do not depend on the shell that runs them: every FERRY_* setting it exports (a
# FERRY_WEB_PORT, FERRY_HOME or FERRY_SERVER_URL would reach the test servers, the CLI runs and
# the in-process client) is dropped, except those the test scripts set on purpose. Test
# servers listen on ports of their own (0: free ones); FERRY_HOME and FERRY_CONFIG_PATH point
# into the session's temporary directory (`_private_settings`), so a user's server (recorded
# in ~/.ferry) and client profiles (~/.ferry.toml) are never found.
# This is done when pytest starts (`pytest_configure`), never on import: containers import test
# modules (and so this one) and need the settings their server gave them.
KEPT_SETTINGS = frozenset({"FERRY_BASE_ROOTFS_DIR", "FERRY_TEST_ROOTFS_CACHE"})  # (the latter: a test knob)


def pytest_configure(config: pytest.Config) -> None:
    for name in [name for name in os.environ if name.startswith("FERRY_") and name not in KEPT_SETTINGS]:
        del os.environ[name]
    # Sandbox base root filesystems are built once per machine (mmdebstrap, ~20 s) and shared by
    # every test server; scripts/test.sh points this at the same place.
    os.environ.setdefault("FERRY_BASE_ROOTFS_DIR", "/var/cache/ferry-test")


@pytest.fixture(scope="session", autouse=True)
def _private_settings(tmp_path_factory: pytest.TempPathFactory):
    """FERRY_HOME and FERRY_CONFIG_PATH of the session's own (tests that need others set them)."""
    base = tmp_path_factory.mktemp("ferry-user")
    os.environ["FERRY_HOME"] = str(base / "home")
    os.environ["FERRY_CONFIG_PATH"] = str(base / "ferry.toml")
    yield base


@dataclass
class ServerProcess:
    """A control plane running as a subprocess of the tests."""

    home: Path
    url: str
    process: subprocess.Popen
    log: Path

    @classmethod
    def start(cls, home: Path, *, port: int = 0, extra_env: dict[str, str] | None = None,
              base_env: dict[str, str] | None = None, args: tuple[str, ...] = (),
              prefix: tuple[str, ...] = (), timeout: float = 20) -> "ServerProcess":
        """Start `python -m ferry.server` (after `prefix`, e.g. `ip netns exec NS`, with more
        `args`) in `base_env` (default: this process's) and wait until it has written its state."""
        home.mkdir(parents=True, exist_ok=True)
        state = home / "server.json"
        if state.exists():
            state.unlink()
        log = home / "server.log"
        # the process runtime unless a test asks for another: most tests share files with
        # their containers and define apps in modules that import pytest
        env = {**(os.environ if base_env is None else base_env), "FERRY_RUNTIME": "process",
               "FERRY_HOME": str(home), "FERRY_WEB_PORT": "0", **(extra_env or {})}
        env.pop("FERRY_SERVER_URL", None)
        handle = open(log, "ab")
        process = subprocess.Popen([*prefix, sys.executable, "-m", "ferry.server", "--port", str(port), *args],
                                   env=env, stdout=handle, stderr=handle, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if state.exists():
                try:
                    data = json.loads(state.read_text())
                except ValueError:
                    data = {}
                if data.get("pid") == process.pid:
                    return cls(home=home, url=data["url"], process=process, log=log)
            if process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"ferry server did not start:\n{log.read_text()}")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def use(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point this process's client at this server, with the administrator credential its
        FERRY_HOME holds."""
        monkeypatch.setenv("FERRY_SERVER_URL", self.url)
        monkeypatch.setenv("FERRY_HOME", str(self.home))

    @contextlib.contextmanager
    def used(self) -> Iterator["ServerProcess"]:
        """`use` for the duration of a `with` block (for fixtures wider than one test)."""
        with pytest.MonkeyPatch.context() as monkeypatch:
            self.use(monkeypatch)
            yield self

    def env(self) -> dict[str, str]:
        """Environment for a subprocess (e.g. the `ferry` CLI) that should use this server."""
        return {**os.environ, "FERRY_HOME": str(self.home), "FERRY_SERVER_URL": self.url,
                "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory):
    """The session's server; FERRY_SERVER_URL points the in-process client at it."""
    home = tmp_path_factory.mktemp("ferry-home")
    proc = ServerProcess.start(home)
    old = {k: os.environ.get(k) for k in ("FERRY_SERVER_URL", "FERRY_HOME")}
    os.environ["FERRY_SERVER_URL"] = proc.url
    os.environ["FERRY_HOME"] = str(home)
    yield proc
    proc.stop()
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def sandbox_server(tmp_path_factory: pytest.TempPathFactory):
    """A second server, with the sandbox runtime; the images its tests build are shared by
    the session (its FERRY_HOME holds the layers)."""
    proc = ServerProcess.start(tmp_path_factory.mktemp("ferry-sandbox-home"),
                               extra_env={"FERRY_RUNTIME": "sandbox"})
    yield proc
    proc.stop()


@pytest.fixture
def on_sandbox(sandbox_server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> ServerProcess:
    """Point this test's client (app.run(), .remote()) at the sandbox server (its FERRY_HOME
    holds the administrator credential the client presents)."""
    sandbox_server.use(monkeypatch)
    return sandbox_server


def run_cli(args: list[str], server: ServerProcess, *, cwd: Path | None = None, timeout: float = 120,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the `ferry` CLI against `server`, capturing its output."""
    return subprocess.run([sys.executable, "-m", "ferry", *args], cwd=cwd or REPO, env={**server.env(), **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


BEYOND_LOOPBACK = "198.18.0.1"
"""A non-loopback address that only exists in the `netns` fixture's network namespace."""


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace of the test's own, with `BEYOND_LOOPBACK` on its `lo`: a server bound
    there is bound beyond loopback, and its traffic never leaves the namespace."""
    name = f"ferry-test-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", name, "addr", "add", f"{BEYOND_LOOPBACK}/32", "dev", "lo"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def mint_credential(server: ServerProcess, netns: str, name: str) -> dict[str, str]:
    """`ferry credential create NAME --json`, run in `netns` against `server` (one started there
    beyond loopback) with its administrator credential: `{token_id, token_secret, server_url,
    tls_fingerprint, ...}`."""
    admin = {**os.environ, "FERRY_HOME": str(server.home), "FERRY_SERVER_URL": server.url}
    created = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-m", "ferry", "credential", "create",
                              name, "--json"], env=admin, capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    return json.loads(created.stdout)


TLS_CLIENT_PRELUDE = r"""
import json, ssl, sys, urllib.error, urllib.request
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None
opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), NoRedirect)
"""
"""The start of a script run in a `netns` that talks HTTPS to a test server (its self-signed
certificate is not checked) and sees redirects as they are (`opener`)."""
