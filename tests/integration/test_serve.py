"""`ferry serve` (hot reload of an edited file, syntax errors, Ctrl-C) and the URLs that
`ferry run`, `ferry serve` and `ferry deploy` print."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import httpx

import ferry
from ferry._client import Client

from ..conftest import ServerProcess, run_cli
from ._web import path_url, wait_for

SOURCE = textwrap.dedent('''
    import time

    import ferry

    app = ferry.App("{name}")

    VERSION = {version}


    @app.function()
    @ferry.fastapi_endpoint()
    def version():
        return {{"version": VERSION}}


    @app.function()
    @ferry.fastapi_endpoint()
    def slow():
        time.sleep(3)
        return {{"version": VERSION}}


    @app.local_entrypoint()
    def main():
        print("entrypoint sees", version.get_web_url())
''')


def write_app(path: Path, name: str, version: object) -> None:
    path.write_text(SOURCE.format(name=name, version=version))


class Output:
    """Collects a subprocess's output lines on a thread, for polling."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match:
        return wait_for(lambda: re.search(pattern, self.text), timeout, f"{pattern!r} in the output of ferry serve:\n"
                        + self.text)


def served_version(url: str) -> object:
    try:
        reply = httpx.get(url, timeout=30)
    except httpx.HTTPError:
        return None
    return reply.json()["version"] if reply.status_code == 200 else None


def test_serve_reloads_edited_code_and_survives_syntax_errors(server: ServerProcess, tmp_path: Path):
    source = tmp_path / "served_app.py"
    write_app(source, "serve-reload", 1)
    process = subprocess.Popen([sys.executable, "-m", "ferry", "serve", str(source)], cwd=tmp_path,
                               env=server.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = Output(process)
    try:
        found = output.wait_for(r"web endpoint version => (http://serve-reload-version-dev\.localhost:\d+)\s+"
                                r"\(or (http://\S+)\)")
        url = found.group(2)
        assert url == path_url(found.group(1))
        slow_url = output.wait_for(r"web endpoint slow => \S+\s+\(or (http://\S+)\)").group(1)
        assert served_version(url) == 1

        # a request in flight when the code changes finishes on its old container
        in_flight: dict[str, object] = {}
        requester = threading.Thread(target=lambda: in_flight.update(reply=httpx.get(slow_url, timeout=60)))
        requester.start()
        client = Client.from_env_sync()

        def slow_running() -> bool:
            info = client.request_sync("app.show", app="serve-reload")
            return any(c["inflight"] for f in info["functions"] if f["tag"] == "slow" for c in f["containers"])

        wait_for(slow_running, 30, "the slow request to reach its container")
        write_app(source, "serve-reload", 2)
        wait_for(lambda: served_version(url) == 2, 60, "the edited code to serve")
        requester.join(60)
        assert in_flight["reply"].status_code == 200 and in_flight["reply"].json() == {"version": 1}

        # a syntax error is reported; the last good version keeps serving
        source.write_text(source.read_text() + "\ndef broken(:\n")
        output.wait_for(r"SyntaxError")
        output.wait_for(r"Still serving the last good version")
        assert served_version(url) == 2
        write_app(source, "serve-reload", 3)
        wait_for(lambda: served_version(url) == 3, 60, "the fixed code to serve")
    finally:
        process.send_signal(signal.SIGINT)
        code = _wait_for_stop(process, output, server)
    assert code == 0, output.text
    assert "Stopped." in output.text
    # Ctrl-C stopped the app and its containers
    gone = httpx.get(url, timeout=30)
    assert gone.status_code == 404
    rows = [r for r in Client.from_env_sync().request_sync("app.list") if r["name"] == "serve-reload"]
    assert rows and all(r["state"] == "stopped" and r["containers"] == 0 for r in rows)


def test_ctrl_c_stops_serve_even_when_it_started_with_sigint_ignored(server: ServerProcess, tmp_path: Path):
    """A background job of a shell script starts with SIGINT ignored (and Python keeps it so):
    `ferry serve` still stops on Ctrl-C."""
    source = tmp_path / "served_app.py"
    write_app(source, "serve-sigint", 1)
    process = subprocess.Popen([sys.executable, "-m", "ferry", "serve", str(source)], cwd=tmp_path,
                               env=server.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    output = Output(process)
    try:
        output.wait_for(r"web endpoint version => ")
    finally:
        process.send_signal(signal.SIGINT)
        code = _wait_for_stop(process, output, server)
    assert code == 0 and "Stopped." in output.text, output.text


def test_serve_with_a_broken_file_fails_clearly(server: ServerProcess, tmp_path: Path):
    source = tmp_path / "broken_app.py"
    source.write_text("import ferry\napp = ferry.App('broken')\nraise RuntimeError('no good')\n")
    result = run_cli(["serve", str(source), "--timeout", "5"], server, cwd=tmp_path)
    assert result.returncode == 1
    assert "RuntimeError: no good" in result.stderr and "loading" in result.stderr


def test_run_and_deploy_print_endpoint_urls(server: ServerProcess, tmp_path: Path):
    source = tmp_path / "url_app.py"
    write_app(source, "url-printing", 7)
    ran = run_cli(["run", str(source)], server, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    printed = re.search(r"web endpoint version => (http://url-printing-version-dev\.localhost:\d+)", ran.stderr)
    assert printed, ran.stderr
    assert f"entrypoint sees {path_url(printed.group(1))}" in ran.stdout  # get_web_url(): path-based

    deployed = run_cli(["deploy", str(source)], server, cwd=tmp_path)
    assert deployed.returncode == 0, deployed.stderr
    url = re.search(r"version => (http://url-printing-version\.localhost:\d+)", deployed.stdout).group(1)
    try:
        assert ferry.Function.from_name("url-printing", "version").get_web_url() == path_url(url)
        assert httpx.get(path_url(url), timeout=60).json() == {"version": 7}
        shown = run_cli(["app", "show", "url-printing"], server)
        assert url in shown.stdout
    finally:
        assert run_cli(["app", "stop", "url-printing"], server).returncode == 0


def test_serve_exits_when_its_server_goes_away(tmp_path: Path):
    own = ServerProcess.start(tmp_path / "home", extra_env={"FERRY_WEB_PORT": "0"})
    source = tmp_path / "lonely_app.py"
    write_app(source, "serve-lonely", 1)
    process = subprocess.Popen([sys.executable, "-m", "ferry", "serve", str(source)], cwd=tmp_path,
                               env=own.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = Output(process)
    try:
        output.wait_for(r"web endpoint version =>")
        own.stop(signal.SIGKILL)
        assert process.wait(30) == 1
        output.wait_for(r"Lost the connection", 10)
    finally:
        if process.poll() is None:
            process.kill()
        own.stop(signal.SIGKILL)


def _wait_for_stop(process: subprocess.Popen, output: Output, server: ServerProcess) -> int:
    """`ferry serve`'s exit code after Ctrl-C; if it does not stop, fail with what it and the
    server said (it is then killed)."""
    try:
        return process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        tail = "\n".join(server.log.read_text(errors="replace").splitlines()[-40:])
        raise AssertionError(f"ferry serve did not stop within 60 s of Ctrl-C. Its output:\n{output.text}\n"
                             f"--- the server's log, last lines:\n{tail}") from None
