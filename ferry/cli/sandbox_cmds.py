"""`ferry sandbox list | stop`: the sandboxes of the server (`ferry.Sandbox`, docs/sandboxes.md)."""

from __future__ import annotations

import time
from typing import Any

import typer
from rich.table import Table

from .._client import Client
from .errors import guard
from .output import console, json_option, print_json

cli = typer.Typer(help="List and stop sandboxes (ferry.Sandbox).", no_args_is_help=True)
out = console()

# `--json` documents of `ferry sandbox list`: these keys, always (times in epoch seconds)
SANDBOX_KEYS = ("id", "app_id", "app_name", "name", "state", "tags", "created", "age_seconds", "returncode")


def _age(seconds: float) -> str:
    whole = int(seconds)
    hours, minutes, secs = whole // 3600, whole % 3600 // 60, whole % 60
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


@cli.command("list")
@guard
def list_sandboxes(app_id: str = typer.Option(None, "--app-id", help="Only the sandboxes of this app (its id)."),
                   all: bool = typer.Option(False, "--all", help="Include ended sandboxes the server still knows."),  # noqa: A002
                   as_json: bool = json_option()) -> None:
    """List sandboxes: id, app, state, tags and age."""
    rows: list[dict[str, Any]] = Client.from_env_sync().request_sync(
        "sandbox.list", app_id=app_id, all=all)
    now = time.time()
    for row in rows:
        row["age_seconds"] = round(now - row["created"], 3)
    if as_json:
        print_json([{key: row.get(key) for key in SANDBOX_KEYS} for row in rows])
        return
    if not rows:
        out.print("No sandboxes are running.")
        return
    table = Table()
    for column in ("sandbox id", "app", "state", "tags", "age"):
        table.add_column(column)
    for row in rows:
        tags = ", ".join(f"{k}={v}" for k, v in sorted(row["tags"].items()))
        table.add_row(row["id"], row["app_name"], row["state"], tags or "-", _age(row["age_seconds"]))
    out.print(table)


@cli.command("stop")
@guard
def stop(sandbox_id: str = typer.Argument(..., metavar="SANDBOX_ID", help="Sandbox id (sb-...).")) -> None:
    """End a sandbox (its processes are killed, its volumes committed) and wait until it has ended."""
    client = Client.from_env_sync()
    client.request_sync("sandbox.terminate", sandbox_id=sandbox_id)
    row = client.request_sync("sandbox.wait", sandbox_id=sandbox_id, timeout=30)
    if row.get("pending"):
        out.print(f"Sandbox {sandbox_id} was asked to stop and has not ended yet.")
        raise typer.Exit(1)
    out.print(f"Stopped sandbox {sandbox_id} ({row['state']}, returncode {row['returncode']}).")
