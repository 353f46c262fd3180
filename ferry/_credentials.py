"""Which server a client talks to, and with which credential.

A client authenticates once per connection, in its `hello`, with a credential: an id and a
secret. It finds them, in this order:

1. inside a container: the container's own credential (`FERRY_CONTAINER_ID`,
   `FERRY_CONTAINER_SECRET`), valid while the container lives;
2. `FERRY_TOKEN_ID` and `FERRY_TOKEN_SECRET` (with `FERRY_SERVER_URL`, and
   `FERRY_TLS_FINGERPRINT` for a server with its own certificate);
3. the active profile of the config file (`FERRY_CONFIG_PATH`, default `~/.ferry.toml`;
   `FERRY_PROFILE` picks one by name, else the one marked `active`), unless
   `FERRY_SERVER_URL` names another server;
4. the local administrator credential that the local server wrote under `FERRY_HOME`
   (`admin-credential.json`, readable by its owner only): no set-up on one machine.

The profiles file is TOML, one table per profile:

    [team]
    server_url = "ferry+tls://ferry.example.internal:7788"
    token_id = "ak-..."
    token_secret = "as-..."
    tls_fingerprint = "3f1c..."      # the server certificate's SHA-256 (or tls_ca = "/path")
    active = true
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _config
from .exception import AuthError, InvalidError

ADMIN_CREDENTIAL_FILE = "admin-credential.json"
PROFILE_KEYS = ("server_url", "token_id", "token_secret", "tls_fingerprint", "tls_ca")


@dataclass(frozen=True)
class Credential:
    """What a client presents in its hello, and how it checks the server's certificate."""

    token_id: str
    token_secret: str = field(repr=False)
    tls_fingerprint: str | None = None  # pinned SHA-256 of the server's certificate
    tls_ca: str | None = None           # or a CA file that signed it
    source: str = ""                    # where it came from, for error messages

    def hello_fields(self) -> dict[str, str]:
        return {"token_id": self.token_id, "token_secret": self.token_secret}


# -- the local administrator credential ------------------------------------------------------
def admin_credential_path(home: Path | None = None) -> Path:
    return (home or _config.get("home")) / ADMIN_CREDENTIAL_FILE


def read_admin_credential(home: Path | None = None) -> Credential | None:
    """The local administrator credential under FERRY_HOME, if this user may read it."""
    path = admin_credential_path(home)
    try:
        data = json.loads(path.read_text())
        return Credential(data["token_id"], data["token_secret"], source=str(path))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_admin_credential(home: Path, token_id: str, token_secret: str) -> Path:
    """Write the administrator credential file, mode 0600 from the start (never readable by
    others, not even for a moment), replacing any older one atomically."""
    path = admin_credential_path(home)
    temporary = path.with_suffix(f".tmp{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump({"token_id": token_id, "token_secret": token_secret}, handle)
    os.replace(temporary, path)
    return path


# -- profiles ----------------------------------------------------------------------------------
def config_path() -> Path:
    return _config.get("config_path")


def read_profiles(path: Path | None = None) -> dict[str, dict[str, Any]]:
    path = path or config_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise InvalidError(f"Cannot read the Ferry profiles file {path}: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidError(f"The Ferry profiles file {path} is not valid TOML: {exc}") from None
    return {name: table for name, table in data.items() if isinstance(table, dict)}


def write_profiles(profiles: dict[str, dict[str, Any]], path: Path | None = None) -> Path:
    """Write the profiles file (mode 0600: it holds secrets)."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    for name, table in profiles.items():
        lines.append(f"[{_toml_key(name)}]")
        for key, value in table.items():
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
        lines.append("")
    temporary = path.with_suffix(f".tmp{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write("\n".join(lines))
    os.replace(temporary, path)
    return path


def _toml_key(key: str) -> str:
    return key if key.replace("-", "").replace("_", "").isalnum() else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def active_profile(profiles: dict[str, dict[str, Any]] | None = None) -> tuple[str, dict[str, Any]] | None:
    """The profile in force: FERRY_PROFILE, else the one marked active."""
    profiles = read_profiles() if profiles is None else profiles
    wanted = _config.get("profile")
    if wanted:
        if wanted not in profiles:
            raise InvalidError(
                f"FERRY_PROFILE={wanted!r}, but {config_path()} has no such profile "
                f"(it has: {', '.join(sorted(profiles)) or 'none'}). See `ferry profile list`.")
        return wanted, profiles[wanted]
    for name, table in profiles.items():
        if table.get("active"):
            return name, table
    return None


# -- resolution --------------------------------------------------------------------------------
def explicit_server_url() -> str | None:
    """The server chosen without looking for a local one: FERRY_SERVER_URL or the profile's."""
    url = _config.get("server_url")
    if url:
        return url
    if os.environ.get("FERRY_CONTAINER_ID"):
        return None
    profile = active_profile()
    return profile[1].get("server_url") if profile else None


def credential_for(url: str) -> Credential:
    """The credential to present to the server at `url` (see the module docstring)."""
    container_id = os.environ.get("FERRY_CONTAINER_ID")
    container_secret = os.environ.get("FERRY_CONTAINER_SECRET")
    if container_id and container_secret:
        return Credential(container_id, container_secret, source="this container")
    fingerprint = _config.get("tls_fingerprint") or None
    token_id, token_secret = _config.get("token_id"), _config.get("token_secret")
    if token_id or token_secret:
        if not (token_id and token_secret):
            raise AuthError("Set both FERRY_TOKEN_ID and FERRY_TOKEN_SECRET, or neither.")
        return Credential(token_id, token_secret, tls_fingerprint=fingerprint,
                          tls_ca=_config.get("tls_ca") or None, source="FERRY_TOKEN_ID/FERRY_TOKEN_SECRET")
    profile = active_profile()
    if profile is not None:
        name, table = profile
        if not _config.get("server_url") or table.get("server_url") == url:
            if not table.get("token_id") or not table.get("token_secret"):
                raise AuthError(f"Profile {name!r} in {config_path()} has no token_id/token_secret. "
                                "Set them with `ferry profile set`.")
            return Credential(table["token_id"], table["token_secret"],
                              tls_fingerprint=fingerprint or table.get("tls_fingerprint"),
                              tls_ca=table.get("tls_ca"), source=f"profile {name!r} of {config_path()}")
    local = read_admin_credential()
    if local is not None:
        from ._local_server import read_state

        state = read_state(_config.get("home")) or {}  # a local server with TLS names its certificate
        pinned = state.get("tls_fingerprint") if state.get("url") == url else None
        return Credential(local.token_id, local.token_secret,
                          tls_fingerprint=fingerprint or pinned, source=local.source)
    raise AuthError(
        f"No credential for the Ferry server at {url}. On the server's machine, "
        f"{admin_credential_path()} is written when the server first starts; from another "
        "machine, ask its administrator for one (`ferry credential create`) and add it with "
        "`ferry profile set`, or set FERRY_TOKEN_ID and FERRY_TOKEN_SECRET.")
