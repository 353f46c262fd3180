"""`ferry app list | show | stop | logs`."""

from __future__ import annotations

import time
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from .._client import Client
from .errors import guard
from .logs_view import LogFilter, LogPrinter, parse_since
from .output import console, json_option, print_json, when

cli = typer.Typer(help="Manage running and deployed apps.", no_args_is_help=True)
out = console()


def _client() -> Client:
    return Client.from_env_sync()


def _schedule_line(info: dict[str, Any]) -> str:
    """`schedule: Period(hours=5); next run 2025-01-01 08:00:00 (in 4h 59m); last run ... (ok)`."""
    wait = max(0, int(info["next_run"] - time.time()))
    days, hours, minutes, seconds = wait // 86400, wait % 86400 // 3600, wait % 3600 // 60, wait % 60
    left = (f"{days}d {hours}h" if days else f"{hours}h {minutes}m" if hours
            else f"{minutes}m {seconds}s" if minutes else f"{seconds}s")
    line = f"schedule: {info['schedule']}; next run {when(info['next_run'])} (in {left})"
    if info.get("last_run"):
        line += f"; last run {when(info['last_run'])} ({info['last_status']})"
    return line


# `--json` documents: these keys, always (times are seconds since the epoch, or null)
APP_KEYS = ("app_id", "name", "state", "functions", "containers", "created", "stopped")
FUNCTION_KEYS = ("tag", "function_id", "kind", "bound", "web_url", "web_path_url", "web_methods", "settings",
                 "schedule", "queued", "containers", "stats", "init_error")
CONTAINER_KEYS = ("id", "state", "inflight", "boot_seconds", "enter_seconds", "node")


def app_json(row: dict[str, Any]) -> dict[str, Any]:
    return {key: row.get("id") if key == "app_id" else row.get(key) for key in APP_KEYS}


def _settings(fn: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sorted({**fn["config"], **fn["overrides"]}.items()) if k != "schedule"}


def function_json(fn: dict[str, Any]) -> dict[str, Any]:
    fields = {**fn, "settings": _settings(fn),
              "containers": [{key: c.get(key) for key in CONTAINER_KEYS} for c in fn["containers"]]}
    return {key: fields.get(key) for key in FUNCTION_KEYS}


@cli.command("list")
@guard
def list_apps(all: bool = typer.Option(False, "--all", help="Include apps stopped over an hour ago."),  # noqa: A002
              as_json: bool = json_option()) -> None:
    """List apps: running (ferry run), deployed, and recently stopped."""
    rows = _client().request_sync("app.list", all=all)
    if as_json:
        print_json([app_json(row) for row in rows])
        return
    table = Table()
    for column in ("app id", "name", "state", "functions", "containers", "created", "stopped"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["id"], row["name"], row["state"], str(row["functions"]), str(row["containers"]),
                      when(row["created"]), when(row["stopped"]))
    out.print(table)


@cli.command("show")
@guard
def show(app: str = typer.Argument(..., help="App name or id."), as_json: bool = json_option()) -> None:
    """Show an app's functions, their settings, containers and timings."""
    info = _client().request_sync("app.show", app=app)
    if as_json:
        print_json({"app_id": info["app_id"], "name": info["name"], "state": info["state"],
                    "created": info["created"], "functions": [function_json(fn) for fn in info["functions"]]})
        return
    out.print(f"[bold]{info['name']}[/bold] ({info['app_id']}) — {info['state']}, created {when(info['created'])}")
    for fn in info["functions"]:
        stats = fn["stats"]
        label = fn["tag"] + (" (bound instance)" if fn["bound"] else "")
        out.print(f"\n[bold]{escape(label)}[/bold] {escape('[' + str(fn['kind']) + ']')}")
        if fn.get("web_url"):
            out.print(f"  web endpoint: {fn['web_url']}  (or {fn['web_path_url']})", markup=False, soft_wrap=True)
        for method, urls in (fn.get("web_methods") or {}).items():  # a class's web endpoints
            out.print(f"  web endpoint {method}: {urls['web_url']}  (or {urls['web_path_url']})",
                      markup=False, soft_wrap=True)
        settings = _settings(fn)
        if settings:
            out.print("  settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()), markup=False)
        if fn.get("schedule"):
            out.print("  " + _schedule_line(fn["schedule"]), markup=False)
        out.print(f"  queued inputs: {fn['queued']}; containers: {len(fn['containers'])}")
        for c in fn["containers"]:
            boot = "-" if c["boot_seconds"] is None else f"{c['boot_seconds'] * 1000:.0f} ms"
            node = f"  node {c['node'][:12]}" if c.get("node") else ""  # its Ray node (ray runtime)
            out.print(f"    {c['id']}  {c['state']}  running {c['inflight']}  start {boot}{node}")
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
         follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming new logs."),
         timestamps: bool = typer.Option(False, "--timestamps", "-t",
                                         help="Start each line with the time it was written (UTC, ISO 8601)."),
         since: str = typer.Option(None, "--since", metavar="WHEN",
                                   help="Only logs written since WHEN: a duration ago (30s, 10m, 1h, 2d, 1h30m) "
                                        "or a time (2025-01-31T08:00, local time unless it has an offset)."),
         function: str = typer.Option(None, "--function", metavar="NAME",
                                      help="Only the logs of this function or class (as `ferry app show` names it)."),
         container: str = typer.Option(None, "--container", metavar="ID",
                                       help="Only the logs of this container (its id, or the start of it)."),
         as_json: bool = typer.Option(False, "--json", help="Print each entry as one line of JSON: ts, function, "
                                      "container, stream, text (every entry has its time; no --timestamps needed).")
         ) -> None:
    """Print an app's container logs; with --follow, keep streaming them."""
    if as_json and timestamps:
        raise typer.BadParameter("--json entries carry their time (ts) already; drop --timestamps.",
                                 param_hint="--timestamps")
    client = _client()
    wanted = LogFilter(since=parse_since(since) if since else None, function=function, container=container)
    printer = LogPrinter(timestamps=timestamps, as_json=as_json)
    filters = {key: value for key, value in (("since", wanted.since), ("function", function),
                                             ("container", container)) if value is not None}
    after = 0
    while True:  # the whole history, page by page
        result = client.request_sync("app.logs", app=app, after=after, **filters)
        for entry in result["entries"]:
            printer(entry)
        if not result["entries"]:
            break
        after = result["entries"][-1]["seq"]
    if not follow:
        printer.close()
        return
    client.log_handlers[result["app_id"]] = lambda entry: printer(entry) if wanted.accepts(entry) else None
    client.request_sync("app.subscribe_logs", app_id=result["app_id"])
    try:
        while client.connected:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    printer.close()
