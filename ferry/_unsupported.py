"""Names of the reference API that Ferry does not support: each is present, and raises a
NotImplementedError that names it and says why (docs/compatibility.md lists them)."""

from __future__ import annotations

from typing import Any, Callable


def unsupported(qualname: str, why: str) -> Callable[..., Any]:
    """A method (or function) that raises NotImplementedError naming `qualname`."""

    def method(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{qualname} is not supported by Ferry: {why}.")

    method.__name__ = qualname.rsplit(".", 1)[-1]
    method.__qualname__ = qualname
    method.__doc__ = f"Not supported by Ferry: {why}."
    method._ferry_unsupported = True  # type: ignore[attr-defined]
    return method


def unsupported_property(qualname: str, why: str) -> property:
    return property(unsupported(qualname, why), doc=f"Not supported by Ferry: {why}.")


async def dashboard_url(path: str) -> str:
    """The dashboard page at `path` of the configured server (`ferry server status` shows its root)."""
    from ._client import Client

    client = await Client.from_env()
    status = await client.request("server.status")
    return status["web_url"].rstrip("/") + path
