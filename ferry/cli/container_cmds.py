"""`ferry container list | logs | stop`: the containers of running and deployed apps.

A container is named by its id (`ct-...`, as `ferry container list` prints it) or an
unambiguous start of it. Each command is one function registered on `cli` (a Typer group):
a new subcommand is one more `@cli.command(...)` in this module.
"""

from __future__ import annotations

import time
from typing import Any

import typer
from rich.table import Table

from .._client import Client
from .container_exec import exec_command
from .errors import guard
from .logs_view import LogFilter, LogPrinter
from .output import console, json_option, print_json

cli = typer.Typer(help="List, inspect and stop the containers of running and deployed apps.", no_args_is_help=True)
cli.command("exec")(exec_command)  # `ferry container exec ID -- CMD` (container_exec.py)
out = console()

# `--json` documents of `ferry container list`: these keys, always (times in epoch seconds)
CONTAINER_KEYS = ("id", "app", "app_id", "function", "function_id", "node", "state", "started", "age_seconds",
                  "inflight", "served")


def _client() -> Client:
    return Client.from_env_sync()


def age(seconds: float) -> str:
    """`42s`, `3m 5s`, `2h 10m`, `3d 4h`."""
    whole = int(seconds)
    days, hours, minutes, secs = whole // 86400, whole % 86400 // 3600, whole % 3600 // 60, whole % 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


@cli.command("list")
@guard
def list_containers(app: str = typer.Option(None, "--app", metavar="APP", help="Only the containers of this app "
                                            "(name or id)."),
                    as_json: bool = json_option()) -> None:
    """List live containers: app, function, node, state, age and inputs served."""
    rows: list[dict[str, Any]] = _client().request_sync("container.list", **({"app": app} if app else {}))
    if as_json:
        print_json([{key: row.get(key) for key in CONTAINER_KEYS} for row in rows])
        return
    if not rows:
        out.print("No containers are running" + (f" for app {app}." if app else "."), markup=False)
        return
    table = Table()
    for column in ("container id", "app", "function", "node", "state", "age", "inputs served"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["id"], row["app"], row["function"], row["node"], row["state"], age(row["age_seconds"]),
                      str(row["served"]))
    out.print(table)


@cli.command("logs")
@guard
def logs(container_id: str = typer.Argument(..., metavar="CONTAINER_ID", help="Container id (or its start)."),
         follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming new logs until it stops."),
         timestamps: bool = typer.Option(False, "--timestamps", "-t",
                                         help="Start each line with the time it was written (UTC, ISO 8601)."),
         as_json: bool = typer.Option(False, "--json", help="Print each entry as one line of JSON: ts, function, "
                                      "container, stream, text.")) -> None:
    """Print what one container wrote (also after it stopped); with --follow, keep streaming it."""
    if as_json and timestamps:
        raise typer.BadParameter("--json entries carry their time (ts) already; drop --timestamps.",
                                 param_hint="--timestamps")
    client = _client()
    printer = LogPrinter(timestamps=timestamps, as_json=as_json)
    after = 0
    while True:  # the whole history, page by page
        result = client.request_sync("container.logs", container_id=container_id, after=after)
        for entry in result["entries"]:
            printer(entry)
        if not result["entries"]:
            break
        after = result["entries"][-1]["seq"]
    if not follow or result["state"] == "stopped":
        printer.close()
        return
    wanted = LogFilter(container=result["container_id"])
    client.log_handlers[result["app_id"]] = lambda entry: printer(entry) if wanted.accepts(entry) else None
    # what was written since, and the live pushes from then on (the server reads and subscribes at once)
    result = client.request_sync("container.logs", container_id=result["container_id"], after=after, follow=True)
    for entry in result["entries"]:
        printer(entry)
    try:
        while client.connected and result["state"] != "stopped":
            time.sleep(0.5)
            result = client.request_sync("container.logs", container_id=result["container_id"], after=1 << 62)
    except KeyboardInterrupt:
        pass
    printer.close()


@cli.command("stop")
@guard
def stop(container_id: str = typer.Argument(..., metavar="CONTAINER_ID", help="Container id (or its start).")
         ) -> None:
    """Stop a container: its inputs run again on another container; it runs @exit and ends."""
    result = _client().request_sync("container.stop", container_id=container_id)
    held = result["requeued"]
    out.print(f"Stopping {result['container_id']}"
              + (f"; its {held} input{'s' if held != 1 else ''} went back to the queue." if held else "."),
              markup=False)
