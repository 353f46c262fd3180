"""The ASGI app a web endpoint's container serves, built from the user's function:

    fastapi   fastapi_app(fn): a FastAPI app with `fn` as the route at `/`
    asgi      the app the function returns
    wsgi      WsgiAdapter(app the function returns)
    server    ServerProxy(port): forwards to the server the function started in the container
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable
from urllib.parse import parse_qsl, urlencode

Scope = dict[str, Any]
ASGIApp = Callable[..., Any]

_BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def fastapi_app(fn: Callable[..., Any], method: str, docs: bool) -> ASGIApp:
    """FastAPI around one function, as the reference platform builds it: query parameters,
    path-less JSON bodies and `Request` parameters map to arguments the way FastAPI maps them.

    One addition for the guide's examples: when a POST/PUT/PATCH/DELETE endpoint has only
    scalar (query) parameters, a JSON object body fills those parameters too
    (`curl -d '{"prompt": "hi"}'` to `def api(prompt: str)`); query parameters win."""
    try:
        from fastapi import FastAPI
    except ImportError:
        raise ImportError("@fastapi_endpoint needs FastAPI in the container: add it to the image, "
                          "e.g. Image.debian_slim().pip_install(\"fastapi[standard]\").") from None
    app = FastAPI(title=getattr(fn, "__name__", "endpoint"), docs_url="/docs" if docs else None,
                  redoc_url="/redoc" if docs else None, openapi_url="/openapi.json" if docs else None)
    app.add_api_route("/", fn, methods=[method])
    route = app.routes[-1]
    dependant = getattr(route, "dependant", None)
    query_names = {p.alias for p in getattr(dependant, "query_params", [])}
    if method in _BODY_METHODS and query_names and not getattr(dependant, "body_params", None):
        return _JsonToQuery(app, query_names)
    return app



async def _read_body(receive: Callable) -> bytes | None:
    """The whole request body of an ASGI HTTP request; None if the client disconnected."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)

class _JsonToQuery:
    """Let a JSON object body fill the query parameters of an endpoint that has no body."""

    def __init__(self, app: ASGIApp, names: set[str]) -> None:
        self.app = app
        self.names = names

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        body = b"".join(chunks)
        try:
            data = json.loads(body) if body.strip() else None
        except ValueError:
            data = None
        if isinstance(data, dict):
            query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
            given = {k for k, _ in query}
            for key, value in data.items():
                if key in self.names and key not in given:
                    values = value if isinstance(value, list) else [value]
                    query.extend((key, v if isinstance(v, str) else json.dumps(v)) for v in values)
            scope = dict(scope, query_string=urlencode(query).encode("latin-1"))
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _is_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.split(b";")[0].strip().lower() == b"application/json"
    return False


# -- WSGI -------------------------------------------------------------------------------------
class WsgiAdapter:
    """Serve a WSGI app (PEP 3333) as ASGI: each request runs the app in a worker thread; a
    list/tuple body is sent as one message, any other iterable is streamed chunk by chunk."""

    def __init__(self, app: Callable[..., Any], threads: int = 64) -> None:
        self.app = app
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ferry-wsgi")

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            await _no_lifespan(receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1003, "reason": "WSGI apps do not serve WebSockets"})
            return
        body = await _read_body(receive)
        if body is None:  # the client went away
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, self._run, scope, body, loop, send)

    def _run(self, scope: Scope, body: bytes, loop: asyncio.AbstractEventLoop, send: Callable) -> None:
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
            if exc_info is not None and started and started[0] is True:
                raise exc_info[1].with_traceback(exc_info[2])
            started[:] = [int(status.split(" ", 1)[0]),
                          [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]]
            return lambda data: None  # the legacy write() callable: unsupported, data dropped

        def emit(message: dict[str, Any]) -> None:
            asyncio.run_coroutine_threadsafe(send(message), loop).result()

        result = self.app(wsgi_environ(scope, body), start_response)
        try:
            if isinstance(result, (list, tuple)):
                status, headers = started
                emit({"type": "http.response.start", "status": status, "headers": headers})
                emit({"type": "http.response.body", "body": b"".join(result)})
                return
            head_sent = False
            for chunk in result:
                if not head_sent:
                    emit({"type": "http.response.start", "status": started[0], "headers": started[1]})
                    head_sent = True
                if chunk:
                    emit({"type": "http.response.body", "body": chunk, "more_body": True})
            if not head_sent:
                emit({"type": "http.response.start", "status": started[0], "headers": started[1]})
            emit({"type": "http.response.body", "body": b""})
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()


def wsgi_environ(scope: Scope, body: bytes) -> dict[str, Any]:
    root_path = scope.get("root_path", "")
    path = scope["path"]
    if root_path and path.startswith(root_path):
        path = path[len(root_path):]
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": root_path.encode("utf-8").decode("latin-1"),
        "PATH_INFO": path.encode("utf-8").decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if client:
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = str(client[0]), str(client[1])
    for name, value in scope["headers"]:
        key = name.decode("latin-1").upper().replace("-", "_")
        text = value.decode("latin-1")
        if key == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = text
        elif key != "CONTENT_LENGTH":
            key = "HTTP_" + key
            environ[key] = f"{environ[key]},{text}" if key in environ else text
    return environ


async def _no_lifespan(receive: Callable, send: Callable) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


# -- @web_server ------------------------------------------------------------------------------
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
               "transfer-encoding", "upgrade"}


class ServerProxy:
    """Forward requests to the HTTP server listening on `port` inside the container (the
    container only connects out to Ferry, so requests travel over that connection and are
    replayed here). The response is streamed back as it is read."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="ferry-proxy")

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            await _no_lifespan(receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1011,
                        "reason": "WebSockets to @web_server endpoints are not supported by Ferry yet"})
            print("ferry: a WebSocket request reached a @web_server endpoint; Ferry proxies only HTTP to "
                  "web servers (serve WebSockets with @asgi_app instead).", file=sys.stderr)
            return
        body = await _read_body(receive)
        if body is None:  # the client went away
            return
        loop = asyncio.get_running_loop()
        connection, response = await loop.run_in_executor(self.executor, self._request, scope, body)
        try:
            headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.getheaders()
                       if k.lower() not in _HOP_BY_HOP]
            await send({"type": "http.response.start", "status": response.status, "headers": headers})
            while True:
                chunk = await loop.run_in_executor(self.executor, response.read1, 1 << 16)
                if not chunk:
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            response.close()
            connection.close()

    def _request(self, scope: Scope, body: bytes) -> Any:
        import http.client

        root_path = scope.get("root_path", "")
        path = scope.get("raw_path") or scope["path"].encode()
        if isinstance(path, str):
            path = path.encode()
        if root_path and path.startswith(root_path.encode()):
            path = path[len(root_path):] or b"/"
        query = scope.get("query_string") or b""
        target = (path + (b"?" + query if query else b"")).decode("latin-1")
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        connection.putrequest(scope["method"], target, skip_host=True, skip_accept_encoding=True)
        for name, value in scope["headers"]:
            if name.decode("latin-1") not in _HOP_BY_HOP and name != b"content-length":
                connection.putheader(name.decode("latin-1"), value.decode("latin-1"))
        if root_path:
            connection.putheader("X-Forwarded-Prefix", root_path)
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        return connection, connection.getresponse()
