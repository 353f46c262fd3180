"""How CLI commands report failures: one line saying what failed, plus the remote traceback."""

from __future__ import annotations

import functools
import traceback
from typing import Any, Callable

import typer
from rich.markup import escape

from ..exception import Error
from .output import console

err = console(stderr=True)


def report(error: BaseException) -> None:
    """Print the remote traceback (if any), then `Error: Type: message` on one line."""
    remote_tb = getattr(error, "__ferry_remote_traceback__", None)
    if remote_tb:
        err.print("[bold]Remote traceback:[/bold]")
        err.print(remote_tb.rstrip(), markup=False)
    elif not isinstance(error, (Error, NotImplementedError)):
        err.print("".join(traceback.format_exception(error)).rstrip(), markup=False)
    first_line = f"{type(error).__name__}: {error}".split("\n")[0]
    err.print(f"[bold red]Error:[/bold red] {escape(first_line)}", markup=True)  # messages may hold [...]


def fail(error: BaseException) -> None:
    """Report `error` and exit with status 1."""
    report(error)
    raise typer.Exit(1)


def guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn Ferry errors raised by a command into a report and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Error as error:
            fail(error)

    return wrapper
