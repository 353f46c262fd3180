"""The `ferry` command line: run, deploy, app, server."""

from __future__ import annotations

import sys
import traceback

import typer
from rich.console import Console

from ..exception import Error
from . import app_cmds, run_cmds, server_cmds

cli = typer.Typer(
    name="ferry",
    help="Ferry: self-hosted serverless compute for Python.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
run_cmds.register(cli)
cli.add_typer(app_cmds.cli, name="app")
cli.add_typer(server_cmds.cli, name="server")

err = Console(stderr=True, highlight=False)


def report(error: BaseException) -> None:
    """One line saying what failed, then the remote traceback when there is one."""
    remote_tb = getattr(error, "__ferry_remote_traceback__", None)
    if remote_tb:
        err.print("[bold]Remote traceback:[/bold]")
        err.print(remote_tb.rstrip(), markup=False)
    elif not isinstance(error, (Error, NotImplementedError)):
        err.print("".join(traceback.format_exception(error)).rstrip(), markup=False)
    err.print(f"[bold red]Error:[/bold red] {type(error).__name__}: {error}".split("\n")[0], markup=True)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        err.print("Interrupted.")
        sys.exit(130)
