"""This terminal attached to a command running in a container (`ferry container exec`,
`ferry shell`): its output written here as it comes, this terminal's input sent to it, and,
with a TTY, the terminal in raw mode for the time of the command."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import threading
from typing import Any, Callable

from .._client import Client
from .._sync import client_loop, run_sync


def new_exec_id() -> str:
    return "ex-" + secrets.token_hex(8)


def terminal_size() -> list[int] | None:
    """[rows, columns] of this terminal, if stdout is one."""
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
    except OSError:
        return None
    return [size.lines, size.columns] if size.lines and size.columns else None  # (0 x 0: not known)


def exit_status(code: int) -> int:
    """A command's exit code as this process's (a signal N gives 128 + N, as shells do)."""
    return code if code >= 0 else 128 - code


def attach(client: Client, exec_id: str, start: Callable[[], Any], send_stdin: Callable[[bytes, bool], Any],
           *, tty: bool, interactive: bool, resize: Callable[[list[int]], Any] | None = None) -> int:
    """Run `start()` (the request that starts command `exec_id`) with its output routed here;
    forward stdin (when `interactive`, or `tty`) with `send_stdin(data, eof)`; return its exit
    code once it ends. With `tty`, this terminal is in raw mode meanwhile, and a change of its
    size (SIGWINCH) is sent with `resize([rows, columns])`."""
    loop = client_loop()
    exited: "asyncio.Future[int] | None" = None

    async def route() -> None:
        nonlocal exited
        exited = loop.create_future()

        def on_frame(frame: dict[str, Any]) -> None:
            assert exited is not None
            if frame.get("k") == "sandbox.out":
                fd = 2 if frame["fd"] == 2 else 1
                data = frame["data"]
                while data:
                    data = data[os.write(fd, data):]
            elif frame.get("k") == "sandbox.exit" and not exited.done():
                exited.set_result(frame["code"])
            elif frame.get("k") == "lost" and not exited.done():
                exited.set_exception(frame["error"])

        client.sandbox_handlers.setdefault(exec_id, []).append(on_frame)

    run_sync(route())
    saved = None
    previous_winch = None
    if tty and resize is not None:
        def on_winch(signum: int, frame: Any) -> None:  # (the main thread: never block here)
            size = terminal_size()
            if size is not None:
                asyncio.run_coroutine_threadsafe(_quietly(resize(size)), loop)

        previous_winch = signal.signal(signal.SIGWINCH, on_winch)
    try:
        run_sync(start())
        if tty and sys.stdin.isatty():
            import termios
            import tty as tty_module

            saved = termios.tcgetattr(sys.stdin.fileno())
            tty_module.setraw(sys.stdin.fileno(), termios.TCSANOW)  # (keeping what was typed already)
        if tty or interactive:
            threading.Thread(target=_forward_stdin, args=(send_stdin,), daemon=True).start()
        else:
            run_sync(send_stdin(b"", True))

        async def wait() -> int:
            assert exited is not None
            return await exited

        return run_sync(wait())
    finally:
        if previous_winch is not None:
            signal.signal(signal.SIGWINCH, previous_winch)
        if saved is not None:
            import termios

            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
        client.sandbox_handlers.pop(exec_id, None)


async def _quietly(request: Any) -> None:
    try:
        await request
    except Exception:  # noqa: BLE001 - a resize racing the command's end: nothing to resize
        pass


def _forward_stdin(send_stdin: Callable[[bytes, bool], Any]) -> None:
    fd = sys.stdin.fileno()
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        try:
            run_sync(send_stdin(data, not data))
        except Exception:  # noqa: BLE001 - the command ended meanwhile: nothing left to feed
            return
        if not data:
            return
