"""Container images as recipes of steps, defined in code.

Each method returns a new Image with one more step; a step's cache key is the hash of its
definition and its parent's key. Today the `process` runtime runs every function in the
server's own Python environment, which is what an unchanged `Image.debian_slim()` means;
an image with build steps raises NotImplementedError naming the step until the image builder
exists.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from typing import Any

from .exception import InvalidError

SUPPORTED_PYTHON = ("3.11", "3.13")


@dataclass(frozen=True)
class Step:
    kind: str
    args: dict[str, Any]


class Image:
    """An image recipe. Build one with `Image.debian_slim(...)` and chained steps."""

    def __init__(self, steps: tuple[Step, ...]) -> None:
        self._steps = steps

    @property
    def steps(self) -> tuple[Step, ...]:
        return self._steps

    def cache_key(self) -> str:
        key = ""
        for step in self._steps:
            blob = json.dumps({"parent": key, "kind": step.kind, "args": step.args}, sort_keys=True, default=str)
            key = hashlib.sha256(blob.encode()).hexdigest()
        return key

    def _with(self, kind: str, **args: Any) -> "Image":
        return Image(self._steps + (Step(kind, args),))

    def __repr__(self) -> str:
        return f"Image({' -> '.join(s.kind for s in self._steps)})"

    # -- bases ----------------------------------------------------------------------------
    @staticmethod
    def debian_slim(python_version: str | None = None, force_build: bool = False) -> "Image":
        """A Debian image with Python (`python_version` "3.11" or "3.13")."""
        if python_version is not None:
            major_minor = ".".join(str(python_version).split(".")[:2])
            if major_minor not in SUPPORTED_PYTHON:
                raise InvalidError(
                    f"python_version={python_version!r} is not available. "
                    f"Available versions: {', '.join(SUPPORTED_PYTHON)}."
                )
            python_version = major_minor
        return Image((Step("debian_slim", {"python_version": python_version, "force_build": force_build}),))

    # -- steps (recorded; built by the image builder) -------------------------------------
    def pip_install(self, *packages: str, **options: Any) -> "Image":
        return self._with("pip_install", packages=_flatten(packages), **options)

    def uv_pip_install(self, *packages: str, **options: Any) -> "Image":
        return self._with("uv_pip_install", packages=_flatten(packages), **options)

    def apt_install(self, *packages: str, **options: Any) -> "Image":
        return self._with("apt_install", packages=_flatten(packages), **options)

    def env(self, vars: dict[str, str]) -> "Image":  # noqa: A002 - public API name
        if not isinstance(vars, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in vars.items()):
            raise InvalidError("Image.env() takes a dict of str to str, e.g. {\"PORT\": \"6443\"}.")
        return self._with("env", vars=dict(vars))

    def run_commands(self, *commands: str, **options: Any) -> "Image":
        return self._with("run_commands", commands=_flatten(commands), **options)

    def add_local_dir(self, local_path: Any, remote_path: str, **options: Any) -> "Image":
        return self._with("add_local_dir", local_path=str(local_path), remote_path=remote_path, **options)

    def add_local_file(self, local_path: Any, remote_path: str, **options: Any) -> "Image":
        return self._with("add_local_file", local_path=str(local_path), remote_path=remote_path, **options)

    def add_local_python_source(self, *modules: str, **options: Any) -> "Image":
        return self._with("add_local_python_source", modules=list(modules), **options)

    def run_function(self, raw_f: Any, **options: Any) -> "Image":
        return self._with("run_function", function=getattr(raw_f, "__qualname__", repr(raw_f)), **options)

    # -- what the current runtime can run -------------------------------------------------
    def check_supported(self) -> None:
        base, *rest = self._steps
        version = base.args.get("python_version")
        here = f"{sys.version_info.major}.{sys.version_info.minor}"
        if version is not None and version != here:
            raise NotImplementedError(
                f"Image.debian_slim(python_version={version!r}) needs the image builder, which "
                f"is still being built; the process runtime runs Python {here}."
            )
        if rest:
            raise NotImplementedError(
                f"Image.{rest[0].kind}() needs Ferry's image builder, which is still being "
                "built. For now functions run in the server's own Python environment: install "
                "the packages there, and remove the step."
            )


def _flatten(items: tuple[Any, ...]) -> list[str]:
    result: list[str] = []
    for item in items:
        if isinstance(item, (list, tuple)):
            result.extend(str(x) for x in item)
        else:
            result.append(str(item))
    return result
