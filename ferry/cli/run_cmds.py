"""`ferry run` and `ferry deploy`."""

from __future__ import annotations

import inspect
import sys
from typing import Any

import typer
from rich.table import Table

from .._sync import run_sync
from . import loader, params
from .output import console

err = console(stderr=True)
out = console()


from .errors import fail as _fail


def run(
    ctx: typer.Context,
    ref: str = typer.Argument(None, metavar="FILE[::NAME]", help="Script (or module) and optionally what to run in it."),
    profile: bool = typer.Option(False, "--profile", help="Print container start, @enter and execution times per function."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Do not stream container logs."),
    detach: bool = typer.Option(False, "--detach", help="Keep the app running after the local program exits "
                                "(what it spawned runs to the end); `ferry app stop` ends it."),
) -> None:
    """Run an app ephemerally: call its local entrypoint (or FILE::function) and stop it.

    Options after FILE go to the entrypoint: `ferry run app.py --who Ferry`;
    `ferry run app.py --help` lists them."""
    if ref is None or ref == "--help":
        typer.echo(ctx.get_help())
        raise typer.Exit(0 if ref == "--help" else 2)
    path, name = loader.split_ref(ref)
    try:
        module = loader.import_file(path)
        target = loader.find_target(module, name)
        fn = target_fn = loader.target_callable(target)
        kwargs = params.parse_args(target_fn, list(ctx.args), prog=f"ferry run {ref}")
    except Exception as error:  # noqa: BLE001 - user import errors are reported, not raised
        _fail(error)
        return
    if kwargs is None:  # --help was shown
        return
    app = target.app
    try:
        run_sync(app._start(show_logs=not quiet, detach=detach))
    except Exception as error:  # noqa: BLE001
        _fail(error)
    from .serve_cmds import print_web_endpoints

    print_web_endpoints(app._web_endpoints, err)
    failure: BaseException | None = None
    try:
        result = loader.call_target(target, (), kwargs)
        if inspect.iscoroutine(result):
            import asyncio

            result = asyncio.run(result)
        if target.entrypoint is None and result is not None:
            out.print(repr(result) if not isinstance(result, str) else result, markup=False)
    except KeyboardInterrupt:
        err.print("Interrupted; stopping the app.")
        failure = KeyboardInterrupt()
    except BaseException as error:  # noqa: BLE001
        failure = error
    stats = None
    try:
        if profile and app.app_id:
            stats = run_sync(app._client.request("app.stats", app_id=app.app_id))  # type: ignore[union-attr]
        if detach:
            err.print(f"App {app.name or app.app_id} ({app.app_id}) keeps running (detached); stop it with "
                      f"`ferry app stop {app.app_id}`.", markup=False, soft_wrap=True)
        else:
            run_sync(app._stop())
    except Exception as error:  # noqa: BLE001
        failure = failure or error
    if stats is not None:
        _print_profile(stats)
    del fn
    if failure is not None:
        if isinstance(failure, KeyboardInterrupt):
            raise typer.Exit(130)
        if isinstance(failure, SystemExit):
            raise typer.Exit(_exit_status(failure))
        _fail(failure)


def _exit_status(exit: SystemExit) -> int:
    """What Python does with an uncaught SystemExit: None is 0, an int is the status, anything
    else is printed to stderr and the status is 1."""
    code = exit.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr, flush=True)
    return 1


def _seconds(value: Any) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


def _print_profile(stats: dict[str, dict[str, Any]]) -> None:
    table = Table(title="Profile", title_justify="left")
    for column in ("function", "containers", "container start", "@enter", "calls", "exec mean", "exec max"):
        table.add_column(column)
    for entry in stats.values():
        table.add_row(entry["tag"], str(entry["containers_started"]), _seconds(entry["boot_mean"]),
                      _seconds(entry["enter_mean"]), str(entry["exec_count"]),
                      _seconds(entry["exec_mean"]), _seconds(entry["exec_max"]))
    err.print(table)


def deploy(
    ref: str = typer.Argument(..., metavar="FILE", help="Script (or module) defining the app."),
    name: str = typer.Option(None, "--name", help="Deploy under this name instead of the app's own."),
) -> None:
    """Deploy an app persistently: its functions stay callable (Function.from_name) until stopped."""
    path, app_var = loader.split_ref(ref)
    try:
        module = loader.import_file(path)
        app = loader.find_app(module, app_var)
        result = app.deploy(name=name)
    except Exception as error:  # noqa: BLE001
        _fail(error)
        return
    app_name = name or app.name
    out.print(f"Deployed app [bold]{app_name}[/bold] ({result['app_id']}).")
    for tag in result["objects"]:
        url = (result.get("web_urls") or {}).get(tag)
        out.print(f"  • {tag}" + (f" => {url}  (or {result['web_path_urls'][tag]})" if url else ""),
                  markup=False, soft_wrap=True)
    out.print(f"Call it with ferry.Function.from_name({app_name!r}, NAME); stop it with `ferry app stop {app_name}`.")


def register(cli: typer.Typer) -> None:
    # --help after FILE belongs to the entrypoint, so the run command handles help itself
    cli.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                  "help_option_names": []}, add_help_option=False)(run)
    cli.command()(deploy)


__all__ = ["register", "sys"]
