"""`ferry secret create | list | delete`. Values go to the server and are never printed."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .._client import Client
from .._secret import check_key
from ..exception import InvalidError
from .errors import guard
from .output import console, json_option, print_json, when

cli = typer.Typer(help="Manage secrets: environment variables injected into containers.", no_args_is_help=True)
out = console()


def parse_assignments(assignments: list[str]) -> dict[str, str]:
    """`KEY=VALUE` arguments as a dict. Errors name the argument's position, never its text,
    since a mistyped argument may be a value."""
    values: dict[str, str] = {}
    for position, text in enumerate(assignments, start=1):
        key, sep, value = text.partition("=")
        if not sep:
            raise InvalidError(f"Argument {position} after the secret name is not KEY=VALUE (its text is not "
                               "shown, as it may be a value). Write each entry as KEY=VALUE.")
        check_key(key, f"Argument {position}")
        if key in values:
            raise InvalidError(f"Key {key!r} is given twice; give each key once.")
        values[key] = value
    return values


def read_dotenv(path: Path) -> dict[str, str]:
    """The KEY=VALUE entries of a .env file (keys without a value are left out)."""
    if not path.is_file():
        raise InvalidError(f"--from-dotenv: {path} is not a file.")
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


@cli.command("create")
@guard
def create(
    name: str = typer.Argument(..., help="Name of the secret, e.g. openai-secret."),
    assignments: list[str] = typer.Argument(None, metavar="KEY=VALUE", help="Environment variables to store."),
    from_dotenv: Path = typer.Option(None, "--from-dotenv", help="Read KEY=VALUE lines from this .env file "
                                     "(KEY=VALUE arguments override its entries)."),
    force: bool = typer.Option(False, "--force", help="Replace the values of an existing secret."),
) -> None:
    """Create a secret from KEY=VALUE pairs and/or a .env file (values are stored encrypted)."""
    values = read_dotenv(from_dotenv) if from_dotenv is not None else {}
    values.update(parse_assignments(assignments or []))
    if not values:
        raise InvalidError(f"Secret {name!r} needs at least one KEY=VALUE argument or --from-dotenv FILE.")
    result = Client.from_env_sync().request_sync("secret.create", name=name, values=values, force=force)
    verb = "Replaced" if result["replaced"] else "Created"
    out.print(f"{verb} secret {name} with keys: {', '.join(result['keys'])}.", markup=False)
    out.print(f"Use it with secrets=[ferry.Secret.from_name({name!r})].", markup=False)


@cli.command("list")
@guard
def list_secrets(as_json: bool = json_option()) -> None:
    """List secrets by name with their dates (never their values)."""
    rows = Client.from_env_sync().request_sync("secret.list")
    if as_json:  # times: seconds since the epoch
        print_json([{key: row.get(key) for key in ("name", "created", "updated")} for row in rows])
        return
    table = Table()
    for column in ("name", "created", "updated"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], when(row["created"]), when(row["updated"]))
    out.print(table)


@cli.command("delete")
@guard
def delete(name: str = typer.Argument(..., help="Name of the secret.")) -> None:
    """Delete a secret. Functions that use it can no longer start containers."""
    result = Client.from_env_sync().request_sync("secret.delete", name=name)
    out.print(f"Deleted secret {name}.", markup=False)
    if result["used_by"]:
        out.print(f"[yellow]Warning:[/yellow] running or deployed app(s) {', '.join(result['used_by'])} use it; "
                  "their new containers will fail to start until it is created again.")
