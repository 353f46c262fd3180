"""`ferry app list | show | stop | logs`."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._client import Client, print_log
from .errors import guard

cli = typer.Typer(help="Manage running and deployed apps.", no_args_is_help=True)
out = Console(highlight=False)


def _client() -> Client:
    return Client.from_env_sync()


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _schedule_line(info: dict[str, Any]) -> str:
    """`schedule: Period(hours=5); next run 2025-01-01 08:00:00 (in 4h 59m); last run ... (ok)`."""
    wait = max(0, int(info["next_run"] - time.time()))
    days, hours, minutes, seconds = wait // 86400, wait % 86400 // 3600, wait % 3600 // 60, wait % 60
    left = (f"{days}d {hours}h" if days else f"{hours}h {minutes}m" if hours
            else f"{minutes}m {seconds}s" if minutes else f"{seconds}s")
    line = f"schedule: {info['schedule']}; next run {_when(info['next_run'])} (in {left})"
    if info.get("last_run"):
        line += f"; last run {_when(info['last_run'])} ({info['last_status']})"
    return line


@cli.command("list")
@guard
def list_apps(all: bool = typer.Option(False, "--all", help="Include apps stopped over an hour ago.")) -> None:  # noqa: A002
    """List apps: running (ferry run), deployed, and recently stopped."""
    rows = _client().request_sync("app.list", all=all)
    table = Table()
    for column in ("app id", "name", "state", "functions", "containers", "created", "stopped"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["id"], row["name"], row["state"], str(row["functions"]), str(row["containers"]),
                      _when(row["created"]), _when(row["stopped"]))
    out.print(table)


@cli.command("show")
@guard
def show(app: str = typer.Argument(..., help="App name or id.")) -> None:
    """Show an app's functions, their settings, containers and timings."""
    info = _client().request_sync("app.show", app=app)
    out.print(f"[bold]{info['name']}[/bold] ({info['app_id']}) — {info['state']}, created {_when(info['created'])}")
    for fn in info["functions"]:
        stats = fn["stats"]
        label = fn["tag"] + (" (bound instance)" if fn["bound"] else "")
        out.print(f"\n[bold]{escape(label)}[/bold] {escape('[' + str(fn['kind']) + ']')}")
        if fn.get("web_url"):
            out.print(f"  web endpoint: {fn['web_url']}  (or {fn['web_path_url']})", markup=False, soft_wrap=True)
        settings = {k: v for k, v in {**fn["config"], **fn["overrides"]}.items() if k != "schedule"}
        if settings:
            out.print("  settings: " + ", ".join(f"{k}={v}" for k, v in sorted(settings.items())), markup=False)
        if fn.get("schedule"):
            out.print("  " + _schedule_line(fn["schedule"]), markup=False)
        out.print(f"  queued inputs: {fn['queued']}; containers: {len(fn['containers'])}")
        for c in fn["containers"]:
            boot = "-" if c["boot_seconds"] is None else f"{c['boot_seconds'] * 1000:.0f} ms"
            out.print(f"    {c['id']}  {c['state']}  running {c['inflight']}  start {boot}")
        if stats["exec_count"]:
            out.print(f"  calls: {stats['exec_count']}, mean {stats['exec_mean'] * 1000:.1f} ms; "
                      f"containers started: {stats['containers_started']}, mean start "
                      f"{(stats['boot_mean'] or 0) * 1000:.0f} ms, @enter {(stats['enter_mean'] or 0) * 1000:.0f} ms")
        if fn["init_error"]:
            out.print(f"  [red]last start failed:[/red] {escape(str(fn['init_error']))}", markup=True)


@cli.command("stop")
@guard
def stop(app: str = typer.Argument(..., help="App name or id.")) -> None:
    """Stop an app: its containers finish their inputs and exit; queued inputs fail."""
    result = _client().request_sync("app.stop", app=app, reason="ferry app stop")
    out.print(f"Stopped {app} ({result['app_id']}).")


@cli.command("logs")
@guard
def logs(app: str = typer.Argument(..., help="App name or id."),
         follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming new logs.")) -> None:
    """Print an app's container logs; with --follow, keep streaming them."""
    client = _client()
    after = 0
    while True:  # the whole history, page by page
        result = client.request_sync("app.logs", app=app, after=after)
        for entry in result["entries"]:
            print_log(entry)
        if not result["entries"]:
            break
        after = result["entries"][-1]["seq"]
    if not follow:
        return
    client.log_handlers[result["app_id"]] = print_log
    client.request_sync("app.subscribe_logs", app_id=result["app_id"])
    try:
        while client.connected:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
