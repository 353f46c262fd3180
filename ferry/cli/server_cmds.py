"""`ferry server` (foreground) and `ferry server start | stop | status`."""

from __future__ import annotations

import os
import signal
import time

import typer
from rich.markup import escape

from .. import _config
from .._local_server import (read_state, reachable, running_server_url, runtime_note, start_background_server,
                             usable_home)
from ..exception import Error
from .errors import err, guard
from .output import console, json_option, print_json, size

cli = typer.Typer(help="Run or manage the local control plane.", invoke_without_command=True)
out = console()


# `ferry server status --json`: these keys, always (null when the server does not say)
STATUS_KEYS = ("version", "url", "pid", "home", "runtime", "web_url", "web_port", "gpus", "started", "apps", "containers",
               "space")
# `space`: bytes on disk per kind (logs are part of the state database)
SPACE_LABELS = {"state_db": "state database", "logs": "  of which logs", "blobs": "blobs (code, payloads, files)",
                "volume_chunks": "volume chunks", "image_layers": "image layers", "base_rootfs": "base root filesystems",
                "venvs": "venvs"}


@cli.callback()
def server(ctx: typer.Context,
           host: str = typer.Option(None, "--host", help="Bind address (default FERRY_HOST, 127.0.0.1)."),
           port: int = typer.Option(None, "--port", help="Port (default FERRY_PORT, 7788)."),
           ray_address: str = typer.Option(None, "--ray-address",
                                           help="Place containers on the Ray cluster at HOST:PORT "
                                                "(FERRY_RAY_ADDRESS; the ray runtime, docs/cluster.md).")) -> None:
    """Run the control plane in the foreground (Ctrl-C stops it)."""
    if ctx.invoked_subcommand is not None:
        return
    from ..server.server import run

    try:
        run(host=host, port=port, ray_address=ray_address)
    except (Error, NotImplementedError) as error:  # the cause in one line; a traceback is in server.log
        err.print(f"[bold red]Error:[/bold red] {escape(' '.join(str(error).split()))}")
        raise typer.Exit(1) from None


@cli.command()
@guard
def start() -> None:
    """Start a local server in the background (does nothing if one is running)."""
    home = usable_home()
    url = running_server_url(home)
    if url:
        out.print(f"A Ferry server is already running at {url}.")
        return
    url = start_background_server(home)
    web_url = (read_state(home) or {}).get("web_url")
    out.print(f"Started a Ferry server at {url} (state in {home}"
              + (f", dashboard at {web_url}/" if web_url else "") + ").")


@cli.command()
@guard
def stop() -> None:
    """Stop the local background server; its containers are stopped too."""
    state = read_state(_config.get("home"))
    if not state or not reachable(state["url"]):
        out.print("No Ferry server is running.")
        return
    try:
        os.kill(int(state["pid"]), signal.SIGTERM)
    except ProcessLookupError:
        out.print("No Ferry server is running.")
        return
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and reachable(state["url"], timeout=0.2):
        time.sleep(0.1)
    out.print(f"Stopped the Ferry server at {state['url']}.")


@cli.command()
@guard
def status(as_json: bool = json_option()) -> None:
    """Say whether a server is running, where, and what it holds."""
    from .._client import Client

    url = _config.get("server_url") or running_server_url(_config.get("home"))
    if not url:
        if as_json:
            print_json({"running": False, **{key: None for key in STATUS_KEYS}, "home": str(_config.get("home"))})
        else:
            out.print(f"No Ferry server is running (state directory {_config.get('home')}).")
        raise typer.Exit(1)
    info = Client.for_url(url).request_sync("server.status", space=True)
    if as_json:
        print_json({"running": True, **{key: info.get(key) for key in STATUS_KEYS}})
        return
    out.print(f"Ferry {info['version']} server at {info['url']} (pid {info['pid']})")
    out.print(f"  state: {info['home']}")
    out.print(f"  runtime: {info['runtime']}")
    note = runtime_note(info)
    if note:
        out.print(f"  [yellow]{note}[/yellow]", soft_wrap=True)
    if info.get("web_url"):
        out.print(f"  web endpoints: {info['web_url']} (http://LABEL.localhost:{info['web_port']}/)")
        out.print(f"  dashboard: {info['web_url']}/")
    out.print(f"  GPUs: {info.get('gpus', 'unknown')}")
    out.print(f"  apps running or deployed: {info['apps']}; containers: {info['containers']}")
    space = info.get("space") or {}
    if space:
        out.print("  space used:")
        for key, label in SPACE_LABELS.items():
            out.print(f"    {label + ':':32} {size(space.get(key))}")


@cli.command()
@guard
def gc(dry_run: bool = typer.Option(False, "--dry-run", help="Only report what would be deleted."),
       as_json: bool = json_option()) -> None:
    """Run the server's maintenance pass now: log retention, unused anonymous secrets, and garbage
    collection of blobs and volume chunks nothing refers to (administrators only)."""
    from .._client import Client

    report = Client.from_env_sync().request_sync("server.gc", dry_run=dry_run)
    if as_json:
        print_json(report)
        return
    blobs = report["blobs"]
    verb = "would delete" if dry_run else "deleted"
    if not dry_run:
        out.print(f"Log lines deleted: {report['log_lines_deleted']}; anonymous secrets deleted: "
                  f"{report['anonymous_secrets_deleted']}.")
    out.print(f"Blobs and volume chunks: {blobs['live_blobs']} in use ({size(blobs['live_bytes'])}); "
              f"{verb} {blobs['removed']} unreferenced ({size(blobs['removed_bytes'])}); kept "
              f"{blobs['recent_unreferenced']} unreferenced ones younger than the grace period "
              f"({blobs['grace_seconds']:.0f} s, FERRY_GC_GRACE_SECONDS).")
    if blobs.get("mounts_removed"):
        out.print(f"Source mounts materialised for containers {verb}: {blobs['mounts_removed']}.")
