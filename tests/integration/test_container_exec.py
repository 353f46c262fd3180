"""`ferry container exec ID -- CMD` into a real function container (output, exit code, stdin,
an interactive shell in a TTY) and `ferry shell FILE::fn` (the function's image, secrets and
volumes), against a real server."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from typing import Iterator

import pytest

from ..conftest import REPO, ServerProcess, run_cli
from .apps.shell_apps import app, try_container_exec, where

SHELL_APPS = "tests/integration/apps/shell_apps.py"


@pytest.fixture(scope="module")
def container(server: ServerProcess):
    """A running container of `where` (idle after its call) and its id."""
    with app.run(show_logs=False):
        yield where.remote()


def test_exec_prints_output_and_exits_with_its_code(server: ServerProcess, container: str) -> None:
    done = run_cli(["container", "exec", container, "--", "sh", "-c",
                    'echo "out $FERRY_CONTAINER_ID"; echo err >&2; exit 4'], server)
    assert done.returncode == 4, done.stderr
    assert done.stdout == f"out {container}\n" and done.stderr == "err\n"
    prefix = run_cli(["container", "exec", container[:9], "--", "cat", "/mnt/shell/marker.txt"], server)
    assert prefix.returncode == 0 and prefix.stdout == "in the volume\n", prefix.stderr


def test_exec_sends_stdin_with_interactive(server: ServerProcess, container: str) -> None:
    done = subprocess.run([sys.executable, "-m", "ferry", "container", "exec", "-i", container, "--", "tr", "a-z", "A-Z"],
                          input="hello\n", cwd=REPO, env=server.env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "HELLO\n", done.stderr


def test_exec_errors_name_the_problem(server: ServerProcess, container: str) -> None:
    missing = run_cli(["container", "exec", "ct-000000000000", "--", "true"], server)
    assert missing.returncode != 0 and "No running container" in missing.stderr
    bad = run_cli(["container", "exec", container, "--", "no-such-program"], server)
    assert bad.returncode != 0 and "no-such-program" in bad.stderr


def _read_until(fd: int, wanted: bytes, seen: bytearray, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while wanted not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no {wanted!r} in {bytes(seen)!r}"
        try:
            seen += os.read(fd, 4096)
        except OSError:  # the terminal closed
            break


def _set_size(terminal: int, rows: int, columns: int) -> None:
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


@contextlib.contextmanager
def _in_a_terminal(args: list[str], server: ServerProcess,
                   size: tuple[int, int] = (24, 80)) -> Iterator[tuple[subprocess.Popen, int]]:
    """`ferry ARGS` with a terminal of its own (of `size`): the process and the terminal's other end."""
    leader, follower = pty.openpty()
    _set_size(leader, *size)
    process = subprocess.Popen([sys.executable, "-m", "ferry", *args], cwd=REPO, env=server.env(),
                               stdin=follower, stdout=follower, stderr=follower, start_new_session=True)
    os.close(follower)
    try:
        yield process, leader
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(leader)


def test_interactive_shell_with_a_tty(server: ServerProcess, container: str) -> None:
    seen = bytearray()
    with _in_a_terminal(["container", "exec", "-t", container, "--", "sh"], server) as (process, terminal):
        os.write(terminal, b"tty; echo $((6 * 7))\n")
        _read_until(terminal, b"42", seen)
        assert b"/dev/pts/" in seen  # the shell has a terminal of its own
        os.write(terminal, b"exit 3\n")
        assert process.wait(60) == 3


def test_the_terminal_size_follows_this_one(server: ServerProcess, container: str) -> None:
    seen = bytearray()
    with _in_a_terminal(["container", "exec", "-t", container, "--", "sh"], server, size=(30, 100)) as (
            process, terminal):
        os.write(terminal, b"stty size\n")
        _read_until(terminal, b"30 100", seen)  # the size it started with
        _set_size(terminal, 40, 120)
        process.send_signal(signal.SIGWINCH)  # (what the kernel sends the terminal's foreground)
        for _ in range(50):  # the resize travels beside the typed input: ask until it has landed
            seen.clear()
            os.write(terminal, b"stty size\n")
            _read_until(terminal, b"\n", seen)
            _read_until(terminal, b"# ", seen)
            if b"40 120" in seen:
                break
        assert b"40 120" in seen
        os.write(terminal, b"exit\n")
        assert process.wait(60) == 0


def test_container_credentials_may_not_exec(server: ServerProcess, container: str) -> None:
    with app.run(show_logs=False):
        assert "container.exec is not permitted from inside a container" in try_container_exec.remote(container)


def test_shell_in_a_functions_environment(server: ServerProcess, container: str) -> None:
    """(`container`: `where` ran, so the volume holds its marker.)"""
    done = subprocess.run([sys.executable, "-m", "ferry", "shell", f"{SHELL_APPS}::where"],
                          input='echo "token=$SHELL_TOKEN"; cat /mnt/shell/marker.txt; exit 5\n', cwd=REPO,
                          env=server.env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 5, done.stderr
    assert "token=from-the-secret\n" in done.stdout and "in the volume\n" in done.stdout
    command = run_cli(["shell", f"{SHELL_APPS}::where", "--cmd", "echo $SHELL_TOKEN"], server)
    assert command.returncode == 0 and command.stdout == "from-the-secret\n", command.stderr
    code = run_cli(["shell", f"{SHELL_APPS}::where", "--cmd",  # (from /: only through the source mount)
                    "cd / && python -c 'import shell_apps; print(shell_apps.app.name)'"],
                   server)
    assert code.returncode == 0 and code.stdout == "test-container-exec\n", code.stderr  # its source code


def test_shell_in_a_terminal(server: ServerProcess) -> None:
    seen = bytearray()
    with _in_a_terminal(["shell", f"{SHELL_APPS}::where"], server) as (process, terminal):
        os.write(terminal, b"echo $SHELL_TOKEN; tty\n")
        _read_until(terminal, b"/dev/pts/", seen)
        assert b"from-the-secret" in seen
        os.write(terminal, b"exit\n")
        assert process.wait(60) == 0
    assert not any(row["state"] == "running" for row in _sandboxes(server))  # the shell's sandbox ended


def _sandboxes(server: ServerProcess) -> list[dict]:
    return json.loads(run_cli(["sandbox", "list", "--json"], server).stdout)
