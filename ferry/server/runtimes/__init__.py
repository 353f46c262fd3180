"""Container runtimes: ways to start container processes (see `base.Runtime`)."""

from __future__ import annotations

from ...exception import InvalidError
from .base import ContainerHandle, ContainerSpec, ExitStatus, Runtime

RUNTIMES = ("auto", "sandbox", "process", "ray")


def sandbox_unavailable_reason() -> str | None:
    """Why the sandbox runtime cannot run here (None when it can)."""
    import shutil

    from .sandbox.bwrap import check_sandbox_support

    try:
        check_sandbox_support()
    except Exception as exc:  # noqa: BLE001 - the reason is reported, not raised
        return str(exc)
    if shutil.which("mmdebstrap") is None:
        return "mmdebstrap is not installed (apt-get install -y mmdebstrap)"
    from .sandbox.network import pasta_unavailable_reason

    return pasta_unavailable_reason()  # container networks (runtimes/sandbox/network.py)


def auto_runtime() -> tuple[str, str | None]:
    """The runtime `auto` would pick on this host now, and why not the sandbox (None when it
    would): a server started before the sandbox's packages were installed reports the
    difference (`server.status`), and a client switches an idle one (_local_server.py)."""
    reason = sandbox_unavailable_reason()
    return ("process" if reason is not None else "sandbox"), reason


def runtime_named(name: str) -> Runtime:
    """The runtime a server setting (`FERRY_RUNTIME`) names; `auto` is the sandbox where
    `sandbox_unavailable_reason()` finds nothing missing, else the process runtime."""
    if name == "auto":
        reason = sandbox_unavailable_reason()
        if reason is not None:
            import logging

            logging.getLogger("ferry.server").warning("using the process runtime: %s", reason)
        name = "process" if reason is not None else "sandbox"
    if name == "process":
        from .process import ProcessRuntime

        return ProcessRuntime()
    if name == "sandbox":
        from ... import _config
        from .sandbox.runtime import SandboxRuntime

        reason = sandbox_unavailable_reason()
        if reason is not None:
            raise InvalidError(f"FERRY_RUNTIME=sandbox cannot run on this host: {reason}")
        return SandboxRuntime(_config.home() / "sandbox")
    if name == "ray":  # connects when the server starts (Runtime.open)
        from ... import _config
        from .ray import RayRuntime

        return RayRuntime(_config.get("ray_address"))
    raise InvalidError(f"Unknown runtime {name!r} (FERRY_RUNTIME). Available: {', '.join(RUNTIMES)}.")


__all__ = ["ContainerHandle", "ContainerSpec", "ExitStatus", "Runtime", "auto_runtime", "runtime_named"]
