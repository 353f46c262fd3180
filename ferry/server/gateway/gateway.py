"""The web gateway: an HTTP server (uvicorn, on the control plane's event loop) that turns
requests for web endpoints into inputs of their functions' pools (see exchange.py).

Per request: route (routes.py) -> proxy auth (tokens.py) -> body limit -> Exchange.
Requests that name no endpoint label, for `/`, `/apps/...` or `/_dashboard/...` (its live feed:
live.py), get the dashboard (dashboard.py), and for `/metrics` the Prometheus metrics (scrape.py).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from typing import TYPE_CHECKING, Any

from ... import _config
from ...exception import InvalidError
from ..model import App
from ..._protocol import is_loopback
from .dashboard import Dashboard, is_dashboard_path
from .live import is_feed_path
from .exchange import Exchange, Receive, Send, respond
from ..tls import TLSFiles, tls_files, wants_tls
from .login import DashboardLogin, is_login_path
from .routes import Route, RouteTable
from .scrape import MetricsEndpoint, is_metrics_path
from .tokens import AUTH_HEADERS, ProxyTokens

if TYPE_CHECKING:
    from ..server import Server

log = logging.getLogger("ferry.server")

PATH_PREFIX = "/_/"


class Gateway:
    def __init__(self, server: "Server") -> None:
        self.server = server
        self.routes = RouteTable()
        self.tokens = ProxyTokens(server.store)
        self.dashboard = Dashboard(server)
        self.host = ""
        self.port = 0
        self.domain = str(_config.get("web_domain")).strip(".").lower()
        self.max_body = int(_config.get("web_max_body_size"))
        self.timeout = float(_config.get("web_request_timeout"))
        self._uvicorn: Any = None
        self._ticker: asyncio.Task | None = None
        self.login: DashboardLogin | None = None  # set in start(), once the bind address is known
        self.metrics: MetricsEndpoint | None = None  # likewise (its audience depends on the address)
        self.tls: TLSFiles | None = None

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self, default_host: str) -> None:
        import uvicorn

        self.host = _config.get("web_host") or default_host
        # beyond loopback: TLS (the control plane's certificate) and a login for the dashboard
        self.tls = self.server.tls
        if self.tls is None and wants_tls(self.host):  # (FERRY_WEB_HOST beyond loopback)
            self.tls = tls_files(self.server.home, self.host)
        self.login = DashboardLogin(self.server.auth, required=not is_loopback(self.host),
                                    secure=self.tls is not None)
        self.metrics = MetricsEndpoint(self.server.metrics_text, self.login)
        sock = self._bind(self.host, int(_config.get("web_port")))
        self.port = sock.getsockname()[1]
        tls_options = {"ssl_certfile": str(self.tls.cert), "ssl_keyfile": str(self.tls.key)} if self.tls else {}
        config = uvicorn.Config(
            self, loop="none", lifespan="off", log_config=None, access_log=False,
            http=_http_impl(), ws="auto", ws_max_size=self.max_body, server_header=False,
            proxy_headers=False, timeout_keep_alive=30, **tls_options,
        )
        config.load()
        self._uvicorn = uvicorn.Server(config)
        self._uvicorn.lifespan = config.lifespan_class(config)  # (set by Server.serve, which we skip)
        await self._uvicorn.startup(sockets=[sock])
        self._ticker = asyncio.create_task(self._uvicorn.main_loop())  # keeps the Date header fresh
        log.warning("Ferry web gateway listening on %s://%s:%d", self.scheme, self.host, self.port)

    def _bind(self, host: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or _config.is_set("web_port"):
                sock.close()
                raise InvalidError(f"The web gateway cannot listen on {host}:{port} ({exc}). Set "
                                   "FERRY_WEB_PORT to a free port (0 picks one).") from None
            log.warning("web port %d is taken; the gateway listens on a free port instead", port)
            sock.bind((host, 0))
        sock.listen(2048)
        sock.setblocking(False)
        return sock

    async def stop(self, grace: float = 3.0) -> None:
        """Stop accepting; let requests in flight finish for up to `grace` seconds."""
        server, self._uvicorn = self._uvicorn, None
        if server is None:
            return
        if self._ticker is not None:
            self._ticker.cancel()
        for listener in server.servers:
            listener.close()
        self.dashboard.live.close()  # the dashboard's event streams end now
        state = server.server_state
        for connection in list(state.connections):
            connection.shutdown()  # idle keep-alive connections close now, busy ones after their response
        deadline = asyncio.get_running_loop().time() + grace
        while (state.connections or state.tasks) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        for task in list(state.tasks):
            task.cancel()

    # -- routes and URLs ------------------------------------------------------------------
    def refresh(self) -> None:
        """Rebuild the route table (after apps or functions change)."""
        self.routes.rebuild(self.server.apps.values(), self.server.scheduler.pools)

    @property
    def url_host(self) -> str:
        return "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.url_host}:{self.port}"

    def url(self, label: str) -> str:
        return f"{self.scheme}://{label}.{self.domain}:{self.port}"

    def path_url(self, label: str) -> str:
        return f"{self.base_url}{PATH_PREFIX}{label}/"

    def urls(self, app: App) -> dict[str, dict[str, str]]:
        """{tag or Cls.method: {"url", "path_url"}} for the web endpoints of `app`."""
        return {route.name: {"url": self.url(route.label), "path_url": self.path_url(route.label)}
                for route in self.routes.routes_of(app, self.server.scheduler.pools)}

    # -- requests -------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            return
        route, root_path = self._route(scope)
        if route is None:
            if root_path:  # `/_/label` without its slash
                query = scope.get("query_string") or b""
                location = root_path + "/" + ("?" + query.decode("latin-1") if query else "")
                if kind == "http":
                    await respond(send, 308, f"Redirecting to {location}", [(b"location", location.encode())])
                return
            if kind == "http" and not self._label_host(scope) and self.login is not None:
                if is_login_path(scope["path"]):  # `/_login`, `/_logout` (login.py)
                    await self.login.handle(scope, receive, send)
                    return
                if is_metrics_path(scope["path"]) and self.metrics is not None:  # `/metrics` (scrape.py)
                    await self.metrics.handle(scope, send)
                    return
                if is_dashboard_path(scope["path"]):  # `/`, `/apps/...`, `/_dashboard/...` (dashboard.py)
                    if self.login.allows(scope):
                        await self.dashboard.handle(scope, receive, send)
                    elif is_feed_path(scope["path"]):  # the live feed's readers are scripts: no redirect
                        await respond(send, 401, "Unauthorized: log in to the dashboard first (/_login).")
                    else:
                        await self.login.refuse(scope, send)
                    return
            await self._not_found(scope, send)
            return
        headers = scope["headers"]
        if route.web.get("requires_proxy_auth") and not self.tokens.check(headers):
            await self._refuse(scope, send)
            return
        if any(name in AUTH_HEADERS for name, _ in headers):
            headers = [(n, v) for n, v in headers if n not in AUTH_HEADERS]
        exchange = Exchange(self.server.scheduler, route.pool, self.timeout, route.method)
        if kind == "websocket":
            await exchange.websocket(_wire_scope(scope, root_path, headers), receive, send)
            return
        body = await self._read_body(headers, receive, send)
        if body is not None:
            await exchange.http(_wire_scope(scope, root_path, headers), body, receive, send)

    def _route(self, scope: dict[str, Any]) -> tuple[Route | None, str]:
        """The route a request is for, and the root path (path-based requests) to strip."""
        for name, value in scope["headers"]:  # host-based first: the app owns all its paths
            if name == b"host":
                host = value.decode("latin-1").rsplit(":", 1)[0].lower() if b"]" not in value else ""
                suffix = "." + self.domain
                if host.endswith(suffix):
                    return self.routes.resolve(host[: -len(suffix)]), ""
                break
        path: str = scope["path"]
        if path.startswith(PATH_PREFIX):
            label, slash, _ = path[len(PATH_PREFIX):].partition("/")
            route = self.routes.resolve(label)
            root_path = PATH_PREFIX + label
            return (route if slash else None), root_path if route is not None else ""
        return None, ""

    def _label_host(self, scope: dict[str, Any]) -> bool:
        """Whether the Host header names an endpoint label (`LABEL.<FERRY_WEB_DOMAIN>`)."""
        for name, value in scope["headers"]:
            if name == b"host":
                return value.decode("latin-1").rsplit(":", 1)[0].lower().endswith("." + self.domain)
        return False

    async def _read_body(self, headers: list, receive: Receive, send: Send) -> bytes | None:
        for name, value in headers:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                await self._too_large(send)
                return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self.max_body:
                    await self._too_large(send)
                    return None
                chunks.append(chunk)
            if not message.get("more_body"):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _too_large(self, send: Send) -> None:
        await respond(send, 413, f"Request body too large: the limit is {self.max_body} bytes "
                                 "(FERRY_WEB_MAX_BODY_SIZE).", [(b"connection", b"close")])

    async def _not_found(self, scope: dict[str, Any], send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "no such web endpoint"})
            return
        await respond(send, 404, (
            "No Ferry web endpoint here. Endpoints are served at "
            f"http://LABEL.{self.domain}:{self.port}/ and {self.base_url}{PATH_PREFIX}LABEL/; "
            "`ferry app show APP` lists an app's URLs."))

    async def _refuse(self, scope: dict[str, Any], send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "missing or invalid proxy auth token"})
            return
        await respond(send, 401, (
            "Unauthorized: this endpoint requires a proxy auth token. Send the headers Ferry-Key and "
            "Ferry-Secret (or Modal-Key and Modal-Secret); create a token with `ferry token create`."))


def _wire_scope(scope: dict[str, Any], root_path: str, headers: list) -> dict[str, Any]:
    """The part of an ASGI scope a container needs (what msgpack can carry)."""
    wire = {
        "type": scope["type"],
        "http_version": scope.get("http_version", "1.1"),
        "scheme": scope.get("scheme", "http"),
        "path": scope["path"],
        "raw_path": scope.get("raw_path"),
        "query_string": scope.get("query_string", b""),
        "root_path": root_path,
        "headers": headers,
        "client": scope.get("client"),
        "server": scope.get("server"),
    }
    if scope["type"] == "http":
        wire["method"] = scope["method"]
    else:
        wire["subprotocols"] = scope.get("subprotocols") or []
    return wire


def _http_impl() -> str:
    try:
        import httptools  # noqa: F401

        return "httptools"
    except ImportError:
        return "h11"
