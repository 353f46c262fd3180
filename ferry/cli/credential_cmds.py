"""`ferry credential ...` (who may use the control plane) and `ferry profile ...` (which server
this client talks to, with which credential).

Client credentials are not the proxy auth tokens of web endpoints (`ferry token`): a
credential administers the whole control plane; a proxy auth token only opens endpoints with
`requires_proxy_auth=True`.
"""

from __future__ import annotations

import shlex

import typer
from rich.table import Table

from .. import _credentials
from .._client import Client
from .._protocol import is_loopback, parse_address
from ..exception import InvalidError
from .errors import guard
from .output import console, json_option, print_json, when

cli = typer.Typer(help="Mint, list and revoke client credentials of this control plane (administrators only).",
                  no_args_is_help=True)
profile_cli = typer.Typer(help="Profiles: which Ferry server this client uses, and its credential.",
                          no_args_is_help=True)
out = console()


@cli.command("create")
@guard
def create(
    name: str = typer.Argument(..., help="Who or what the credential is for (a person, a CI job, a machine)."),
    server_url: str = typer.Option("", "--server-url",
                                   help="The address others reach this server at, for the printed "
                                        "profile command (default: the server's own URL)."),
    as_json: bool = json_option(),
) -> None:
    """Mint an administrator credential; its secret is shown only now."""
    created = Client.from_env_sync().request_sync("credential.create", name=name)
    url = server_url or created["server_url"]
    if as_json:
        print_json({**created, "server_url": url})
        return
    out.print(f"Created credential {created['token_id']} ({created['name']}). The secret is not shown again.",
              markup=False)
    out.print(f"  token id:     {created['token_id']}", markup=False)
    out.print(f"  token secret: {created['token_secret']}", markup=False)
    if created.get("tls_fingerprint"):
        out.print(f"  server certificate (SHA-256): {created['tls_fingerprint']}", markup=False)
    command = ["ferry", "profile", "set", "PROFILE", "--server-url", url,
               "--token-id", created["token_id"], "--token-secret", created["token_secret"]]
    if created.get("tls_fingerprint"):
        command += ["--tls-fingerprint", created["tls_fingerprint"]]
    out.print("On the machine that will use it, run:", markup=False)
    out.print("  " + shlex.join(command), markup=False)


@cli.command("list")
@guard
def list_credentials(as_json: bool = json_option()) -> None:
    """List credentials (ids, names, dates, open connections; never secrets)."""
    rows = Client.from_env_sync().request_sync("credential.list")
    if as_json:
        print_json(rows)
        return
    table = Table()
    for column in ("token id", "name", "role", "created", "revoked", "connections"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["token_id"], row["name"], row["role"], when(row["created"]),
                      when(row["revoked"]), str(row["connections"]))
    out.print(table)


@cli.command("revoke")
@guard
def revoke(token_id: str = typer.Argument(..., help="The credential's id (ak-...).")) -> None:
    """Revoke a credential: it stops working at once, and connections that used it are closed."""
    result = Client.from_env_sync().request_sync("credential.revoke", token_id=token_id)
    closed = result.get("closed_connections")
    suffix = f" ({closed} open connection{'s' if closed != 1 else ''} closed)" if closed else ""
    out.print(f"Revoked credential {token_id}{suffix}.", markup=False)


# -- profiles ----------------------------------------------------------------------------------
@profile_cli.command("set")
@guard
def profile_set(
    name: str = typer.Argument(..., help="The profile's name."),
    server_url: str = typer.Option(..., "--server-url", help="ferry+tls://HOST:PORT (or ferry://127.0.0.1:PORT)."),
    token_id: str = typer.Option(..., "--token-id", help="The credential's id (ak-...)."),
    token_secret: str = typer.Option(..., "--token-secret", help="The credential's secret (as-...)."),
    tls_fingerprint: str = typer.Option("", "--tls-fingerprint",
                                        help="SHA-256 of the server's generated certificate, to pin."),
    tls_ca: str = typer.Option("", "--tls-ca", help="CA file that signed the server's certificate."),
    activate: bool = typer.Option(True, "--activate/--no-activate", help="Make it the active profile."),
) -> None:
    """Add or replace a profile in the profiles file (written with mode 0600)."""
    address = parse_address(server_url)
    if address.scheme == "ferry" and not is_loopback(address.host):
        raise InvalidError(f"{server_url} is not on this machine, so it must be reached with TLS: "
                           f"use ferry+tls://{address.host}:{address.port}.")
    profiles = _credentials.read_profiles()
    table = {"server_url": server_url, "token_id": token_id, "token_secret": token_secret}
    if tls_fingerprint:
        table["tls_fingerprint"] = tls_fingerprint.lower().replace(":", "")
    if tls_ca:
        table["tls_ca"] = tls_ca
    if activate:
        for other in profiles.values():
            other.pop("active", None)
        table["active"] = True
    elif profiles.get(name, {}).get("active"):
        table["active"] = True
    profiles[name] = table
    path = _credentials.write_profiles(profiles)
    state = "active" if table.get("active") else "not active"
    out.print(f"Saved profile {name!r} ({state}) in {path}.", markup=False)


@profile_cli.command("list")
@guard
def profile_list(as_json: bool = json_option()) -> None:
    """List profiles (never secrets)."""
    profiles = _credentials.read_profiles()
    current = _credentials.active_profile(profiles)
    rows = [{"name": name, "server_url": table.get("server_url"), "token_id": table.get("token_id"),
             "active": current is not None and current[0] == name} for name, table in profiles.items()]
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print(f"No profiles in {_credentials.config_path()}: this client uses the local server.",
                  markup=False)
        return
    table = Table()
    for column in ("", "name", "server", "token id"):
        table.add_column(column)
    for row in rows:
        table.add_row("*" if row["active"] else "", row["name"], row["server_url"] or "-", row["token_id"] or "-")
    out.print(table)


@profile_cli.command("activate")
@guard
def profile_activate(name: str = typer.Argument(..., help="The profile to use from now on.")) -> None:
    """Make a profile the active one."""
    profiles = _credentials.read_profiles()
    if name not in profiles:
        raise InvalidError(f"No profile named {name!r} in {_credentials.config_path()} "
                           f"(it has: {', '.join(sorted(profiles)) or 'none'}).")
    for table in profiles.values():
        table.pop("active", None)
    profiles[name]["active"] = True
    _credentials.write_profiles(profiles)
    out.print(f"Profile {name!r} is active.", markup=False)


@profile_cli.command("deactivate")
@guard
def profile_deactivate() -> None:
    """Use the local server again (no profile active)."""
    profiles = _credentials.read_profiles()
    for table in profiles.values():
        table.pop("active", None)
    _credentials.write_profiles(profiles)
    out.print("No profile is active: this client uses the local server.", markup=False)


@profile_cli.command("current")
@guard
def profile_current() -> None:
    """Print the name of the active profile (or `local`)."""
    current = _credentials.active_profile()
    out.print(current[0] if current else "local", markup=False)


@profile_cli.command("delete")
@guard
def profile_delete(name: str = typer.Argument(..., help="The profile to remove.")) -> None:
    """Remove a profile (its credential stays valid on the server until revoked)."""
    profiles = _credentials.read_profiles()
    if profiles.pop(name, None) is None:
        raise InvalidError(f"No profile named {name!r} in {_credentials.config_path()}.")
    _credentials.write_profiles(profiles)
    out.print(f"Deleted profile {name!r}.", markup=False)
