"""`ferry dict create | list | clear | get | items | delete`: named dicts from the shell.

Keys typed on the command line are strings; values are shown with `repr` (or as JSON with
`--json`, where a value that JSON cannot hold is shown as its `repr`).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from .._client import Client
from .._dict import Dict
from .errors import guard

cli = typer.Typer(help="Manage dicts: durable key-value stores shared by containers.", no_args_is_help=True)
out = Console(highlight=False, soft_wrap=True)


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


def json_value(value: Any) -> Any:
    """`value` as JSON can hold it, else its repr."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


@cli.command("create")
@guard
def create(name: str = typer.Argument(..., help="Name of the dict.")) -> None:
    """Create a named, durable dict."""
    Dict.objects.create(name)
    out.print(f"Created dict {name}. Use it with ferry.Dict.from_name({name!r}).", markup=False)


@cli.command("list")
@guard
def list_dicts(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List named dicts with their number of entries."""
    rows = Client.from_env_sync().request_sync("dict.list")
    if as_json:
        out.print(json.dumps([{"name": r["name"], "id": r["id"], "entries": r["entries"], "created": r["created"]}
                              for r in rows], indent=2), markup=False)
        return
    table = Table()
    for column in ("name", "entries", "created"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], f"{row['entries']:,}", _when(row["created"]))
    out.print(table)


@cli.command("clear")
@guard
def clear(name: str = typer.Argument(..., help="Name of the dict."),
          yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")) -> None:
    """Remove every entry of a dict."""
    if not yes and not typer.confirm(f"Remove every entry of dict {name}? This cannot be undone."):
        raise typer.Exit(1)
    Dict.from_name(name).clear()
    out.print(f"Cleared dict {name}.", markup=False)


@cli.command("get")
@guard
def get(name: str = typer.Argument(..., help="Name of the dict."),
        key: str = typer.Argument(..., help="The key (a string).")) -> None:
    """Print the value of a key (a string key)."""
    missing = object()
    value = Dict.from_name(name).get(key, missing)
    if value is missing:
        out.print(f"Dict {name} has no key {key!r}.", markup=False)
        raise typer.Exit(1)
    out.print(repr(value), markup=False)


@cli.command("items")
@guard
def items(name: str = typer.Argument(..., help="Name of the dict."),
          n: int = typer.Argument(20, help="How many entries to show."),
          as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show the first N entries of a dict (in no particular order)."""
    shown = []
    for index, (key, value) in enumerate(Dict.from_name(name).items()):
        if index >= n:
            break
        shown.append((key, value))
    if as_json:
        out.print(json.dumps([{"key": json_value(k), "value": json_value(v)} for k, v in shown], indent=2),
                  markup=False)
        return
    table = Table()
    table.add_column("key")
    table.add_column("value")
    for key, value in shown:
        table.add_row(repr(key), repr(value))
    out.print(table)


@cli.command("delete")
@guard
def delete(name: str = typer.Argument(..., help="Name of the dict."),
           yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
           allow_missing: bool = typer.Option(False, "--allow-missing", help="Succeed if it does not exist.")) -> None:
    """Delete a named dict and all of its entries."""
    if not yes and not typer.confirm(f"Delete dict {name} and all of its entries? This cannot be undone."):
        raise typer.Exit(1)
    Dict.objects.delete(name, allow_missing=allow_missing)
    out.print(f"Deleted dict {name}.", markup=False)
