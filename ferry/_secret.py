"""Secrets: sets of environment variables injected into a function's containers.

A `Secret` is either a reference to a secret stored, encrypted, on the server
(`Secret.from_name`, created with `ferry secret create`) or a set of values known on this
machine (`from_dict`, `from_dotenv`, `from_local_environ`). Values known here travel to the
server once, when the app is published; the server stores them encrypted as an anonymous
secret and function definitions only ever carry its name.

What a function definition stores for `secrets=` (its "references", in declared order):

    {"name": NAME, "required_keys": [KEY, ...]}   a named secret (from_name)
    {"values": {KEY: VALUE}}                       values from this machine; the server replaces
                                                   this with {"name": "anon-..."} on arrival
    {"unavailable": MESSAGE}                       declared inside a container, where local
                                                   files and variables are not read
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from ._unsupported import unsupported, unsupported_property
from .exception import InvalidError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ANONYMOUS_PREFIX = "anon-"


def check_secret_name(name: Any) -> str:
    """A valid secret name, or InvalidError saying what a name may contain."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InvalidError(
            f"Invalid secret name {name!r}: use 1 to 64 letters, digits, '.', '-' or '_', "
            "starting with a letter or digit."
        )
    if name.startswith(ANONYMOUS_PREFIX):
        raise InvalidError(f"Secret names starting with {ANONYMOUS_PREFIX!r} are reserved; choose another name.")
    return name


def check_key(key: Any, what: str) -> str:
    """An environment variable name: non-empty, without '=', NUL or whitespace."""
    if not isinstance(key, str) or not key or any(c in key for c in "=\0") or any(c.isspace() for c in key):
        raise InvalidError(
            f"{what}: {key!r} is not a valid environment variable name (it must be non-empty and "
            "contain no '=', whitespace or NUL)."
        )
    return key


def check_values(values: Any, what: str) -> dict[str, str]:
    """A dict of environment variable names to string values. Errors never show a value."""
    if not isinstance(values, dict):
        raise InvalidError(f"{what} takes a dict of str to str, got {type(values).__name__}.")
    checked: dict[str, str] = {}
    for key, value in values.items():
        check_key(key, what)
        if not isinstance(value, str):
            raise InvalidError(f"{what}: the value of {key!r} must be a str, got {type(value).__name__}.")
        if "\0" in value:
            raise InvalidError(f"{what}: the value of {key!r} contains a NUL character, which an "
                               "environment variable cannot hold.")
        checked[key] = value
    return checked


def _inside_container() -> bool:
    """Containers import the user's module again; there, local files and variables are not
    read (the container receives its secrets from the server)."""
    return os.environ.get("FERRY_IS_CONTAINER") == "1"


class Secret:
    """A set of environment variables for a function's containers.

    Use `Secret.from_name("my-secret")` for a secret created with `ferry secret create`, or
    `from_dict` / `from_dotenv` / `from_local_environ` for values known on this machine. When a
    function has several secrets, later ones override earlier ones key by key.
    """

    @property
    def client(self) -> Any:
        """The client secrets are resolved with (the configured server's)."""
        from ._client import Client

        return Client.from_env_sync()

    hydrate = unsupported("Secret.hydrate", "a missing secret fails `ferry run` / `ferry deploy` before any "
                          "container starts")
    info = unsupported("Secret.info", "use `ferry secret list`")
    update = unsupported("Secret.update", "use `ferry secret create NAME KEY=value --force`")
    get_dashboard_url = unsupported("Secret.get_dashboard_url", "the dashboard has no secret pages")
    object_id = unsupported_property("Secret.object_id", "secrets are referred to by name")
    objects = unsupported_property("Secret.objects", "use `ferry secret create / list / delete`")

    def __init__(self, *, name: str | None = None, values: dict[str, str] | None = None,
                 required_keys: Sequence[str] = (), description: str = "",
                 unavailable: str | None = None) -> None:
        self.name = name
        self._values = values
        self._required_keys = list(required_keys)
        self._description = description or (f"Secret.from_name({name!r})" if name else "Secret.from_dict(...)")
        self._unavailable = unavailable

    def __repr__(self) -> str:
        return self._description

    @staticmethod
    def from_name(name: str, *, environment_name: str | None = None,
                  required_keys: Sequence[str] | None = None) -> "Secret":
        """A secret stored on the server under `name` (create it with `ferry secret create`).

        `required_keys`: keys the secret must have; `ferry run`/`ferry deploy` fail before any
        container starts if one is missing.
        """
        if environment_name is not None:
            raise NotImplementedError("Secret.from_name(environment_name=...) is not supported by Ferry "
                                      "(it has no environments); remove environment_name=.")
        check_secret_name(name)
        if isinstance(required_keys, str) or not isinstance(required_keys, (list, tuple, type(None))):
            raise InvalidError("required_keys= takes a list of key names, e.g. required_keys=['API_KEY'].")
        keys = list(required_keys or [])
        for key in keys:
            check_key(key, "Secret.from_name(required_keys=...)")
        return Secret(name=name, required_keys=keys)

    @staticmethod
    def from_dict(env_dict: dict[str, str | None]) -> "Secret":
        """A secret from a dict of environment variables. Keys whose value is None are left
        out, so `from_dict({"TOKEN": os.environ.get("TOKEN")})` works when TOKEN is unset."""
        if not isinstance(env_dict, dict):
            raise InvalidError(f"Secret.from_dict() takes a dict of str to str, got {type(env_dict).__name__}.")
        values = check_values({k: v for k, v in env_dict.items() if v is not None}, "Secret.from_dict()")
        return Secret(values=values, description=f"Secret.from_dict(<keys {', '.join(values)}>)")

    @staticmethod
    def from_dotenv(path: str | Path | None = None, *, filename: str = ".env") -> "Secret":
        """A secret from a `.env` file, searched for from `path` (a directory, or a file such as
        `__file__` whose directory is used; default: the current directory) up to the root."""
        description = f"Secret.from_dotenv({'' if path is None else repr(str(path))})"
        if _inside_container():
            return Secret(description=description, unavailable=(
                f"{description} was declared inside a container, where local files are not read"))
        start = Path.cwd() if path is None else Path(path).expanduser().resolve()
        found = _find_upwards(start, filename)
        if found is None:
            raise InvalidError(f"{description}: no {filename} file in {start} or any directory above it. "
                               f"Create {filename} with KEY=value lines, or pass the directory holding it.")
        from dotenv import dotenv_values

        values = {k: v for k, v in dotenv_values(found).items() if v is not None}
        return Secret(values=check_values(values, f"Secret.from_dotenv() reading {found}"),
                      description=description)

    @staticmethod
    def from_local_environ(env_keys: Sequence[str]) -> "Secret":
        """A secret from environment variables of this process, by name."""
        if isinstance(env_keys, str) or not isinstance(env_keys, (list, tuple)):
            raise InvalidError("Secret.from_local_environ() takes a list of variable names, "
                               "e.g. Secret.from_local_environ(['API_KEY']).")
        keys = [check_key(k, "Secret.from_local_environ()") for k in env_keys]
        description = f"Secret.from_local_environ({keys!r})"
        if _inside_container():
            return Secret(description=description, unavailable=(
                f"{description} was declared inside a container, where local variables are not read"))
        missing = [k for k in keys if k not in os.environ]
        if missing:
            raise InvalidError(f"Secret.from_local_environ(): environment variable(s) {', '.join(missing)} "
                               "are not set in this process. Set them before running.")
        return Secret(values={k: os.environ[k] for k in keys}, description=description)

    def _reference(self) -> dict[str, Any]:
        """What a function definition stores for this secret (see the module docstring)."""
        if self._unavailable is not None:
            return {"unavailable": self._unavailable}
        if self.name is not None:
            return {"name": self.name, "required_keys": list(self._required_keys)}
        return {"values": dict(self._values or {})}


def _find_upwards(start: Path, filename: str) -> Path | None:
    directory = start if start.is_dir() else start.parent
    for candidate in [directory, *directory.parents]:
        if (candidate / filename).is_file():
            return candidate / filename
    return None


def check_secrets(value: Any, option: str = "secrets") -> list[Secret]:
    """The list of Secrets given as `secrets=`, or InvalidError saying how to pass them."""
    if value is None:
        return []
    if isinstance(value, Secret):
        raise InvalidError(f"{option}= takes a list of secrets: {option}=[{value!r}].")
    if not isinstance(value, (list, tuple)) or not all(isinstance(s, Secret) for s in value):
        raise InvalidError(f"{option}= takes a list of ferry.Secret, e.g. "
                           f"{option}=[ferry.Secret.from_name('my-secret')].")
    return list(value)


def secret_references(secrets: Iterable[Secret]) -> list[dict[str, Any]] | None:
    """The references stored in a function's config (None when there are no secrets)."""
    references = [s._reference() for s in secrets]
    return references or None
