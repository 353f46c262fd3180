"""`ferry queue create | list | clear | peek | len | delete`: named queues from the shell."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.table import Table

from .._client import Client
from .._queue import Queue
from ..exception import InvalidError
from .dict_cmds import _when, json_value, out
from .errors import guard

cli = typer.Typer(help="Manage queues: durable FIFO queues shared by containers.", no_args_is_help=True)


@cli.command("create")
@guard
def create(name: str = typer.Argument(..., help="Name of the queue.")) -> None:
    """Create a named, durable queue."""
    Queue.objects.create(name)
    out.print(f"Created queue {name}. Use it with ferry.Queue.from_name({name!r}).", markup=False)


@cli.command("list")
@guard
def list_queues(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List named queues with their partitions and items."""
    rows = Client.from_env_sync().request_sync("queue.list")
    if as_json:
        out.print(json.dumps([{"name": r["name"], "id": r["id"], "partitions": r["partitions"],
                               "items": r["items"], "created": r["created"]} for r in rows], indent=2), markup=False)
        return
    table = Table()
    for column in ("name", "partitions", "items", "created"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], f"{row['partitions']:,}", f"{row['items']:,}", _when(row["created"]))
    out.print(table)


@cli.command("clear")
@guard
def clear(name: str = typer.Argument(..., help="Name of the queue."),
          partition: Optional[str] = typer.Option(None, "--partition", "-p", help="Clear this partition."),
          all_partitions: bool = typer.Option(False, "--all", help="Clear every partition."),
          yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")) -> None:
    """Remove the items of the default partition (or of --partition, or of --all)."""
    if partition is not None and all_partitions:
        raise InvalidError("Pass --partition or --all, not both.")
    what = "every partition" if all_partitions else f"partition {partition}" if partition else "the default partition"
    if not yes and not typer.confirm(f"Remove the items of {what} of queue {name}? This cannot be undone."):
        raise typer.Exit(1)
    Queue.from_name(name).clear(partition=partition, all=all_partitions)
    out.print(f"Cleared {what} of queue {name}.", markup=False)


@cli.command("peek")
@guard
def peek(name: str = typer.Argument(..., help="Name of the queue."),
         n: int = typer.Argument(1, help="How many items to show."),
         partition: Optional[str] = typer.Option(None, "--partition", "-p", help="Peek at this partition."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show the next N items without removing them."""
    shown = []
    for item in Queue.from_name(name).iterate(partition=partition):
        if len(shown) >= n:
            break
        shown.append(item)
    if as_json:
        out.print(json.dumps([json_value(v) for v in shown], indent=2), markup=False)
        return
    for item in shown:
        out.print(repr(item), markup=False)


@cli.command("len")
@guard
def length(name: str = typer.Argument(..., help="Name of the queue."),
           partition: Optional[str] = typer.Option(None, "--partition", "-p", help="Count this partition."),
           total: bool = typer.Option(False, "--total", "-t", help="Count every partition.")) -> None:
    """Print the number of items in the default partition (or --partition, or --total)."""
    out.print(str(Queue.from_name(name).len(partition=partition, total=total)), markup=False)


@cli.command("delete")
@guard
def delete(name: str = typer.Argument(..., help="Name of the queue."),
           yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
           allow_missing: bool = typer.Option(False, "--allow-missing", help="Succeed if it does not exist.")) -> None:
    """Delete a named queue and all of its items."""
    if not yes and not typer.confirm(f"Delete queue {name} and all of its items? This cannot be undone."):
        raise typer.Exit(1)
    Queue.objects.delete(name, allow_missing=allow_missing)
    out.print(f"Deleted queue {name}.", markup=False)
