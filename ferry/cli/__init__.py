"""The `ferry` command line: run, deploy, app, container, server, secret, image, volume, dict, queue,
sandbox."""

from __future__ import annotations

import sys

import typer

from . import credential_cmds, sandbox_cmds, shell_cmd
from . import (
    app_cmds, container_cmds, dict_cmds, image_cmds, queue_cmds, run_cmds, secret_cmds, serve_cmds, server_cmds,
    setup_cmd, token_cmds, volume_cmds,
)
from .errors import err

cli = typer.Typer(
    name="ferry",
    help="Ferry: self-hosted serverless compute for Python.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
run_cmds.register(cli)
setup_cmd.register(cli)
shell_cmd.register(cli)
cli.add_typer(app_cmds.cli, name="app")
cli.add_typer(container_cmds.cli, name="container")
cli.add_typer(server_cmds.cli, name="server")
cli.add_typer(secret_cmds.cli, name="secret")
cli.add_typer(image_cmds.cli, name="image")
cli.add_typer(token_cmds.cli, name="token")
cli.add_typer(volume_cmds.cli, name="volume")
cli.add_typer(dict_cmds.cli, name="dict")
cli.add_typer(queue_cmds.cli, name="queue")
cli.add_typer(sandbox_cmds.cli, name="sandbox")
cli.add_typer(credential_cmds.cli, name="credential")
cli.add_typer(credential_cmds.profile_cli, name="profile")
serve_cmds.register(cli)

def main() -> None:
    try:
        cli(standalone_mode=True)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        err.print("Interrupted.")
        sys.exit(130)
