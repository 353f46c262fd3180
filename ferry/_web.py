"""Web endpoint decorators: `@fastapi_endpoint`, `@asgi_app`, `@wsgi_app`, `@web_server`
(and `@web_endpoint`, the guide's older name of `fastapi_endpoint`).

Each marks the function with a `web` description that `@app.function()` copies into the
function's definition; the control plane's gateway (ferry/server/gateway/) routes HTTP
requests to the function's containers, which serve them with the app the container builds
(ferry/_container/web.py):

    kind       the container serves
    fastapi    a FastAPI app with the function as its only route, at `/`
    asgi       the ASGI app the function returns (called once per container)
    wsgi       the WSGI app the function returns, through an ASGI adapter
    server     whatever the function starts listening on `port` inside the container
"""

from __future__ import annotations

import inspect
import re
from typing import Any, Callable

from ._partial import WEB, PartialFunction, _mark
from .exception import InvalidError, deprecation_warning

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def check_label(label: str | None) -> str | None:
    """A `label=` is one DNS label: lowercase letters, digits and dashes, at most 63 long."""
    if label is None:
        return None
    if not isinstance(label, str) or not _LABEL.match(label):
        raise InvalidError(
            f"Invalid web endpoint label {label!r}: use 1-63 lowercase letters, digits and dashes, "
            "not starting or ending with a dash (it becomes the host name LABEL.localhost)."
        )
    return label


def one_container_for_web_server(what: str, config: dict[str, Any]) -> None:
    """A `@web_server` listens on a port of this machine, which containers share: it runs in
    one container (`config`'s max_containers becomes 1; more is refused, naming `what`)."""
    if (config.get("max_containers") or 1) > 1 or (config.get("min_containers") or 0) > 1:
        raise InvalidError(
            f"{what} runs one container (its port is a port of this machine, which containers share); "
            "remove max_containers/min_containers above 1 and use @ferry.concurrent(max_inputs=...) to "
            "serve requests in parallel.")
    config["max_containers"] = 1


def _common(name: str, label: str | None, custom_domains: Any, requires_proxy_auth: bool) -> dict[str, Any]:
    if custom_domains:
        raise NotImplementedError(f"@{name}(custom_domains=...) is not supported by Ferry: endpoints "
                                  "are served at LABEL.<FERRY_WEB_DOMAIN>; set label= instead.")
    if not isinstance(requires_proxy_auth, bool):
        raise InvalidError(f"requires_proxy_auth must be True or False, got {requires_proxy_auth!r}.")
    return {"label": check_label(label), "requires_proxy_auth": requires_proxy_auth}


def _no_bare_use(value: Any, name: str) -> None:
    if value is not None:
        raise InvalidError(f"Use @ferry.{name}() with parentheses, not @ferry.{name}. "
                           "Did you forget them?")


def _marker(name: str, web: dict[str, Any], *, takes_arguments: bool) -> Callable[[Any], PartialFunction]:
    def wrapper(f: Any) -> PartialFunction:
        raw = f.raw_f if isinstance(f, PartialFunction) else f
        if isinstance(f, PartialFunction) and WEB in f.flags:
            raise InvalidError(f"{getattr(raw, '__name__', 'This function')} already has a web "
                               f"decorator; use only one of them.")
        if callable(raw) and not takes_arguments:
            required = [p.name for p in inspect.signature(raw).parameters.values()
                        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                        and p.name != "self"]
            if required:
                raise InvalidError(
                    f"@{name}() functions take no arguments: {raw.__name__} returns the app (or "
                    f"starts the server), called once per container. Remove {', '.join(required)}."
                )
        return _mark(f, WEB, {"web": web}, decorator=name)

    return wrapper


def fastapi_endpoint(_warn_parentheses: Any = None, *, method: str = "GET", label: str | None = None,
                     custom_domains: Any = None, docs: bool = False,
                     requires_proxy_auth: bool = False) -> Callable[[Any], PartialFunction]:
    """Serve the function over HTTP as a FastAPI route at `/`: query parameters and JSON bodies
    become its arguments, as FastAPI maps them (`docs=True` serves the OpenAPI page at /docs)."""
    _no_bare_use(_warn_parentheses, "fastapi_endpoint")
    if not isinstance(method, str) or method.upper() not in HTTP_METHODS:
        raise InvalidError(f"method must be one of {', '.join(HTTP_METHODS)}, got {method!r}.")
    web = {"type": "fastapi", "method": method.upper(), "docs": bool(docs),
           **_common("fastapi_endpoint", label, custom_domains, requires_proxy_auth)}
    return _marker("fastapi_endpoint", web, takes_arguments=True)


def web_endpoint(_warn_parentheses: Any = None, *, method: str = "GET", label: str | None = None,
                 custom_domains: Any = None, docs: bool = False,
                 requires_proxy_auth: bool = False) -> Callable[[Any], PartialFunction]:
    """The guide's older name of `fastapi_endpoint` (deprecated)."""
    deprecation_warning("@web_endpoint is deprecated; use @fastapi_endpoint instead (same arguments).")
    return fastapi_endpoint(_warn_parentheses, method=method, label=label, custom_domains=custom_domains,
                            docs=docs, requires_proxy_auth=requires_proxy_auth)


def asgi_app(_warn_parentheses: Any = None, *, label: str | None = None, custom_domains: Any = None,
             requires_proxy_auth: bool = False) -> Callable[[Any], PartialFunction]:
    """Serve the ASGI app (FastAPI, Starlette, ...) the function returns. The function runs
    once per container; the app's lifespan events run at container start and shutdown."""
    _no_bare_use(_warn_parentheses, "asgi_app")
    web = {"type": "asgi", **_common("asgi_app", label, custom_domains, requires_proxy_auth)}
    return _marker("asgi_app", web, takes_arguments=False)


def wsgi_app(_warn_parentheses: Any = None, *, label: str | None = None, custom_domains: Any = None,
             requires_proxy_auth: bool = False) -> Callable[[Any], PartialFunction]:
    """Serve the WSGI app (Flask, Django, ...) the function returns, once per container."""
    _no_bare_use(_warn_parentheses, "wsgi_app")
    web = {"type": "wsgi", **_common("wsgi_app", label, custom_domains, requires_proxy_auth)}
    return _marker("wsgi_app", web, takes_arguments=False)


def web_server(port: int, *, startup_timeout: float = 5.0, label: str | None = None,
               custom_domains: Any = None, requires_proxy_auth: bool = False) -> Callable[[Any], PartialFunction]:
    """Serve any HTTP server the function starts listening on `port` inside the container.
    Requests are proxied to it once it accepts connections (within `startup_timeout` s)."""
    if callable(port) or isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidError(f"@web_server(port=...) needs a port number between 1 and 65535, got {port!r}. "
                           "Example: @ferry.web_server(8000).")
    if isinstance(startup_timeout, bool) or not isinstance(startup_timeout, (int, float)) or startup_timeout <= 0:
        raise InvalidError(f"startup_timeout must be a positive number of seconds, got {startup_timeout!r}.")
    web = {"type": "server", "port": port, "startup_timeout": float(startup_timeout),
           **_common("web_server", label, custom_domains, requires_proxy_auth)}
    return _marker("web_server", web, takes_arguments=False)
