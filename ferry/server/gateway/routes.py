"""Which web endpoint a request is for: labels, and the table from label to function pool.

An endpoint's label is its `label=` or `<app name>-<function name>` (`<app name>-<class
name>-<method name>` for a web endpoint of a class; lowercased, other characters turned into
dashes, at most 63 characters). Endpoints of ephemeral apps (`ferry
serve`, `ferry run`, `app.run()`) get a `-dev` suffix, so a deployed app and its development
version are served side by side. Requests reach an endpoint two ways:

    host-based   http://LABEL.<FERRY_WEB_DOMAIN>:PORT/path     (browsers, curl)
    path-based   http://HOST:PORT/_/LABEL/path                   (any client)

A label belongs to one app name: a live app of another name asking for it is refused. Within
an app name the most recently created live app wins (two `ferry run`s of one script).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Iterable

from ...exception import InvalidError
from ..model import App, AppState, Pool

MAX_LABEL = 63
DEV_SUFFIX = "-dev"


def endpoint_label(app_name: str, tag: str, web: dict[str, Any], *, ephemeral: bool) -> str:
    """The DNS label an endpoint is served under."""
    suffix = DEV_SUFFIX if ephemeral else ""
    label = web.get("label")
    if not label:
        base = f"{app_name}-{tag}"
        label = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]+", "-", base.lower())).strip("-") or "endpoint"
        if len(label) + len(suffix) > MAX_LABEL:  # keep it unique: a short hash of the full name
            digest = hashlib.sha256(base.encode()).hexdigest()[:6]
            label = label[: MAX_LABEL - len(suffix) - 7].rstrip("-") + "-" + digest
    elif len(label) + len(suffix) > MAX_LABEL:
        label = label[: MAX_LABEL - len(suffix)].rstrip("-")
    return label + suffix


@dataclass
class Route:
    label: str
    pool: Pool
    web: dict[str, Any]
    method: str | None = None  # a web endpoint of a class: the method serving it

    @property
    def name(self) -> str:
        """The endpoint's name in URL listings: the function's tag, or `Cls.method`."""
        return f"{self.pool.tag}.{self.method}" if self.method else self.pool.tag


def web_endpoints(tag: str, definition: dict[str, Any]) -> list[tuple[str, str | None, dict[str, Any]]]:
    """`(name for its default label, method, web)` for each web endpoint of a function (one)
    or a class (one per web method, named `Cls-method`)."""
    if definition.get("web"):
        return [(tag, None, definition["web"])]
    return [(f"{tag}-{method}", method, web) for method, web in (definition.get("web_methods") or {}).items()]


class RouteTable:
    """label -> Route, rebuilt from the live apps whenever apps or functions change."""

    def __init__(self) -> None:
        self.by_label: dict[str, Route] = {}

    def rebuild(self, apps: Iterable[App], pools: dict[str, Pool]) -> None:
        table: dict[str, Route] = {}
        for app in sorted((a for a in apps if a.live), key=lambda a: a.created):
            for route in self.routes_of(app, pools):
                table[route.label] = route
        self.by_label = table

    @staticmethod
    def routes_of(app: App, pools: dict[str, Pool]) -> list[Route]:
        routes = []
        for tag, function_id in app.objects.items():
            pool = pools.get(function_id)
            if pool is None:
                continue
            for name, method, web in web_endpoints(tag, pool.definition):
                label = endpoint_label(app.name, name, web, ephemeral=app.state is AppState.RUNNING)
                routes.append(Route(label, pool, web, method))
        return routes

    def check(self, app_name: str, ephemeral: bool, functions: list[dict[str, Any]]) -> None:
        """Refuse an app whose endpoint labels collide with each other or with a live app of
        another name (raises InvalidError naming both)."""
        mine: dict[str, str] = {}
        for spec in functions:
            for name, method, web in web_endpoints(spec["tag"], spec["definition"]):
                shown = f"{spec['tag']}.{method}" if method else spec["tag"]
                label = endpoint_label(app_name, name, web, ephemeral=ephemeral)
                if label in mine:
                    raise InvalidError(f"Web endpoints {mine[label]} and {shown} of app {app_name!r} would "
                                       f"both be served as {label!r}; give one of them another label=.")
                mine[label] = shown
                taken = self.by_label.get(label)
                if taken is not None and taken.pool.app.live and taken.pool.app.name != app_name:
                    raise InvalidError(
                        f"The web endpoint label {label!r} ({app_name}.{shown}) is already used by "
                        f"{taken.name} of app {taken.pool.app.name!r}. Choose another label=, or stop "
                        f"that app (`ferry app stop {taken.pool.app.name}`)."
                    )

    def resolve(self, label: str) -> Route | None:
        route = self.by_label.get(label)
        if route is None or not route.pool.app.live:
            return None
        return route
