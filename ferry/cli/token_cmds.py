"""`ferry token create | list | revoke`: proxy auth tokens for `requires_proxy_auth=True`
web endpoints. A token's secret is printed once, when it is created; the server keeps a hash."""

from __future__ import annotations


import typer
from rich.table import Table

from .._client import Client
from .errors import guard
from .output import console, json_option, print_json, when

cli = typer.Typer(help="Manage proxy auth tokens for web endpoints with requires_proxy_auth=True.",
                  no_args_is_help=True)
out = console()


@cli.command("create")
@guard
def create(name: str = typer.Option("", "--name", help="A note saying what the token is for.")) -> None:
    """Create a token; its secret is shown only now."""
    token = Client.from_env_sync().request_sync("token.create", name=name)
    out.print(f"Created proxy auth token {token['token_id']}{f' ({name})' if name else ''}.", markup=False)
    out.print(f"  Ferry-Key: {token['token_id']}", markup=False)
    out.print(f"  Ferry-Secret: {token['token_secret']}", markup=False)
    out.print("Send both headers with each request (Modal-Key / Modal-Secret work too). The secret is not "
              "shown again.", markup=False)
    out.print(f"  curl -H 'Ferry-Key: {token['token_id']}' -H 'Ferry-Secret: {token['token_secret']}' URL",
              markup=False)


@cli.command("list")
@guard
def list_tokens(as_json: bool = json_option()) -> None:
    """List tokens (ids, names and dates; never secrets)."""
    rows = Client.from_env_sync().request_sync("token.list")
    if as_json:  # times: seconds since the epoch
        print_json([{key: row.get(key) for key in ("token_id", "name", "created")} for row in rows])
        return
    table = Table()
    for column in ("token id", "name", "created"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["token_id"], row["name"], when(row["created"]))
    out.print(table)


@cli.command("revoke")
@guard
def revoke(token_id: str = typer.Argument(..., help="The token's id (wk-...).")) -> None:
    """Revoke a token: requests carrying it are refused from now on."""
    Client.from_env_sync().request_sync("token.revoke", token_id=token_id)
    out.print(f"Revoked proxy auth token {token_id}.", markup=False)
