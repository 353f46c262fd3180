"""`ferry serve FILE`: run an app ephemerally and reload it when its source changes.

    load (fresh interpreter: serve_child.py) -> publish -> print URLs -> watch files
        change -> load again -> ok:    publish into the same app (app.create with app_id):
                                       functions whose code changed get new containers;
                                       requests in flight finish on the old ones (they drain)
                             -> error: print it; the last good version keeps serving

Ctrl-C (or SIGTERM, or --timeout) stops the app and everything it started.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack
import typer
from rich.console import Console

from .._client import Client, print_log
from ..exception import ConnectionError
from .errors import fail
from .output import console

out = console()
err = console(stderr=True)

POLL_SECONDS = 0.25
SETTLE_SECONDS = 0.1  # editors write files in several steps


def print_web_endpoints(endpoints: dict[str, dict[str, str]], console: Console = out) -> None:
    """One line per web endpoint: its URL, and the path-based URL for any HTTP client."""
    for tag, urls in endpoints.items():
        console.print(f"✓ web endpoint {tag} => {urls['url']}  (or {urls['path_url']})", markup=False, soft_wrap=True)


class LoadFailed(Exception):
    pass


class ServeSession:
    """The state of one `ferry serve`: the client, the app it owns, the files it watches."""

    def __init__(self, ref: str, client: Client) -> None:
        self.ref = ref
        self.client = client
        self.app_id: str | None = None
        self.files: list[str] = [str(Path(ref.partition("::")[0]).resolve())]
        self.stamps: dict[str, tuple[int, int] | None] = {}

    def load(self) -> dict[str, Any]:
        """Import the app in a fresh interpreter; its definitions (blobs already uploaded)."""
        env = {**os.environ, "FERRY_SERVER_URL": self.client.url}
        with tempfile.TemporaryDirectory(prefix="ferry-serve-") as tmp:
            result = Path(tmp) / "load.msgpack"
            code = subprocess.call([sys.executable, "-m", "ferry.cli.serve_child", self.ref, str(result)], env=env)
            if code != 0 or not result.exists():
                raise LoadFailed(f"loading {self.ref} failed (exit status {code})")
            loaded = msgpack.unpackb(result.read_bytes(), raw=False, strict_map_key=False)
        self.files = loaded["files"]
        self.stamps = self.snapshot()
        return loaded

    def publish(self, loaded: dict[str, Any]) -> dict[str, Any]:
        from .._image_progress import BuildDisplay

        progress_id = secrets.token_hex(8)
        display = BuildDisplay()
        self.client.image_handlers[progress_id] = display
        args: dict[str, Any] = {"name": loaded["name"], "kind": "ephemeral", "functions": loaded["specs"],
                                "progress_id": progress_id}
        if self.app_id is not None:
            args["app_id"] = self.app_id
        try:
            result = self.client.request_sync("app.create", **args)
        finally:
            self.client.image_handlers.pop(progress_id, None)
            display.close()
        return result

    def snapshot(self) -> dict[str, tuple[int, int] | None]:
        stamps: dict[str, tuple[int, int] | None] = {}
        for path in self.files:
            try:
                stat = os.stat(path)
                stamps[path] = (stat.st_mtime_ns, stat.st_size)
            except OSError:
                stamps[path] = None
        return stamps

    def wait_for_change(self, deadline: float | None) -> bool:
        """Block until a watched file changes (True) or the deadline passes (False)."""
        while deadline is None or time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            if not self.client.connected:  # the server went away, and the app with it
                raise ConnectionError(f"Lost the connection to the Ferry server at {self.client.url}; "
                                      "the app is no longer served.")
            current = self.snapshot()
            if current != self.stamps:
                time.sleep(SETTLE_SECONDS)
                self.stamps = self.snapshot()
                return True
        return False


def serve(
    ref: str = typer.Argument(..., metavar="FILE[::APP]", help="Script defining the app."),
    timeout: float = typer.Option(None, "--timeout", help="Stop after this many seconds (default: until Ctrl-C)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Do not stream container logs."),
) -> None:
    """Serve an app's web endpoints, reloading when its files change (Ctrl-C stops it)."""
    signal.signal(signal.SIGTERM, _interrupt)
    # Ctrl-C stops it even where it started with SIGINT ignored (a background job of a shell
    # script inherits that, and Python then keeps ignoring it)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        client = Client.from_env_sync()
    except Exception as error:  # noqa: BLE001
        fail(error)
        return
    session = ServeSession(ref, client)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        try:
            loaded = session.load()
            result = session.publish(loaded)
        except LoadFailed as error:
            fail(error)
            return
        except Exception as error:  # noqa: BLE001
            fail(error)
            return
        session.app_id = result["app_id"]
        if not quiet:
            client.log_handlers[result["app_id"]] = print_log
            client.request_sync("app.subscribe_logs", app_id=result["app_id"])
        out.print(f"Serving app {loaded['name']} ({result['app_id']}); watching {len(session.files)} file(s) "
                  "for changes. Ctrl-C stops it.", markup=False)
        _announce(result)
        while session.wait_for_change(deadline):
            out.print("Change detected; reloading...", markup=False)
            try:
                loaded = session.load()
                result = session.publish(loaded)
            except LoadFailed as error:
                err.print(f"Reload failed: {error}. Still serving the last good version.", markup=False)
                continue
            except Exception as error:  # noqa: BLE001 - e.g. a bad image: keep serving the old one
                err.print(f"Reload failed: {type(error).__name__}: {error}. Still serving the last good "
                          "version.", markup=False)
                continue
            out.print("Reloaded: new requests run the new code.", markup=False)
            _announce(result)
    except KeyboardInterrupt:
        pass
    except ConnectionError as error:
        session.app_id = None  # nothing left to stop
        fail(error)
    finally:
        _stop(session)


def _announce(result: dict[str, Any]) -> None:
    urls = result.get("web_urls") or {}
    paths = result.get("web_path_urls") or {}
    if urls:
        print_web_endpoints({tag: {"url": url, "path_url": paths.get(tag, url)} for tag, url in urls.items()})
    else:
        out.print("The app has no web endpoints (use @ferry.fastapi_endpoint, @asgi_app, @wsgi_app or "
                  "@web_server).", markup=False)


def _stop(session: ServeSession) -> None:
    if session.app_id is None:
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave the app half-stopped
    out.print("Stopping the app...", markup=False)
    try:
        session.client.request_sync("app.stop", app=session.app_id, reason="ferry serve stopped")
    except Exception as error:  # noqa: BLE001 - the server may be gone; the app ends with our connection
        err.print(f"Could not stop the app cleanly: {error}", markup=False)
    out.print("Stopped.", markup=False)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def register(cli: typer.Typer) -> None:
    cli.command()(serve)
