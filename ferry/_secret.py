"""Secrets: environment variables injected into containers.

Declaring secrets works; injecting them (`secrets=`) raises NotImplementedError until the
encrypted secret store is built."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .exception import InvalidError


class Secret:
    """A set of environment variables, by name (`from_name`) or by value (`from_dict`)."""

    def __init__(self, name: str | None = None, values: dict[str, str] | None = None) -> None:
        self.name = name
        self._values = values

    @staticmethod
    def from_name(name: str, *, required_keys: list[str] | None = None, **_: Any) -> "Secret":
        if not isinstance(name, str) or not name:
            raise InvalidError("Secret.from_name() needs a non-empty name.")
        return Secret(name=name)

    @staticmethod
    def from_dict(env_dict: dict[str, str]) -> "Secret":
        if not isinstance(env_dict, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env_dict.items()):
            raise InvalidError("Secret.from_dict() takes a dict of str to str.")
        return Secret(values=dict(env_dict))

    @staticmethod
    def from_dotenv(path: str | Path = ".env") -> "Secret":
        from dotenv import dotenv_values  # type: ignore[import-not-found]

        file = Path(path)
        if file.is_dir():
            file = file / ".env"
        if not file.exists():
            raise InvalidError(f"Secret.from_dotenv(): {file} does not exist.")
        return Secret(values={k: v or "" for k, v in dotenv_values(file).items()})

    def __repr__(self) -> str:
        return f"Secret.from_name({self.name!r})" if self.name else "Secret.from_dict(...)"
