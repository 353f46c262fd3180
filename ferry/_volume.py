"""Volumes: persistent files shared between containers (`Volume.from_name(...)`).

Declaring a volume works; mounting one (`volumes=`) and its methods raise NotImplementedError
until the volume store is built."""

from __future__ import annotations

from typing import Any

from .exception import InvalidError


def _not_yet(what: str) -> NotImplementedError:
    return NotImplementedError(f"Volume.{what}() is not supported by Ferry yet (volumes are still being built).")


class Volume:
    """A named, persistent volume."""

    def __init__(self, name: str | None, *, create_if_missing: bool = False, version: int | None = None) -> None:
        if version not in (None, 1, 2):
            raise InvalidError(f"Volume version must be 1 or 2, got {version!r}.")
        self.name = name
        self.create_if_missing = create_if_missing
        self.version = version

    @staticmethod
    def from_name(name: str, *, create_if_missing: bool = False, version: int | None = None, **_: Any) -> "Volume":
        if not isinstance(name, str) or not name:
            raise InvalidError("Volume.from_name() needs a non-empty name.")
        return Volume(name, create_if_missing=create_if_missing, version=version)

    def commit(self) -> None:
        raise _not_yet("commit")

    def reload(self) -> None:
        raise _not_yet("reload")

    def __repr__(self) -> str:
        return f"Volume.from_name({self.name!r})"
