"""Container runtimes: ways to start container processes (see `base.Runtime`)."""

from __future__ import annotations

from ...exception import InvalidError
from .base import ContainerHandle, ContainerSpec, ExitStatus, Runtime

RUNTIMES = ("process",)


def runtime_named(name: str) -> Runtime:
    """The runtime a server setting (`FERRY_RUNTIME`) names."""
    if name == "process":
        from .process import ProcessRuntime

        return ProcessRuntime()
    raise InvalidError(f"Unknown runtime {name!r} (FERRY_RUNTIME). Available: {', '.join(RUNTIMES)}.")


__all__ = ["ContainerHandle", "ContainerSpec", "ExitStatus", "Runtime", "runtime_named"]
