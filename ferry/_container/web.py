"""Serving a web endpoint inside its container: the ASGI app runs on the container's event
loop; each HTTP request or WebSocket session is one input.

    reader thread --inputs {args: {asgi: {scope, body}}}--> submit() --> task on the loop
    reader thread --web.in {id, msg}----------------------> the input's receive()
    task --send(msg)--> outputs items {status: item, asgi: [msgs]} (streamed as they come)
    task ends -------> output {status: ok | error, asgi: [unsent msgs]}

A plain response (start + complete body) and the end of its input travel in one frame when the
app returns right after sending it. At most `max_inputs` (@concurrent) inputs run at once.
Lifespan events of `@asgi_app` apps run once per container: startup before the container
reports ready, shutdown when it drains.
"""

from __future__ import annotations

import asyncio
import contextvars
import socket
import threading
import time
import traceback
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from .._running import input_ids, set_current
from .._serialization import serialize_exception
from .web_apps import ServerProxy, WsgiAdapter, fastapi_app

if TYPE_CHECKING:
    from .runner import ContainerRunner

ASGI_VERSION = {"version": "3.0", "spec_version": "2.3"}
PORT_WAIT_SECONDS = 35.0  # a draining container is killed after 30 s (server/containers.py)


def request_slots(max_inputs: int) -> asyncio.Semaphore:
    """The limit on requests a container serves at once (`@concurrent(max_inputs=...)`)."""
    return asyncio.Semaphore(max(1, max_inputs))


class WebHost:
    def __init__(self, runner: "ContainerRunner", web: dict[str, Any], slots: asyncio.Semaphore) -> None:
        self.runner = runner
        self.web = web
        self.loop = runner.event_loop()
        self.app: Any = None
        self.state: dict[str, Any] = {}
        self.exchanges: dict[int, _Exchange] = {}
        self.tasks: set[asyncio.Task] = set()
        self.slots = slots  # shared by the container's endpoints: at most max_inputs requests at once
        self._lifespan: _Lifespan | None = None

    # -- start-up -------------------------------------------------------------------------
    def start(self, target: Callable[..., Any]) -> None:
        """Build the app from the user's function (and run its lifespan startup)."""
        kind = self.web["type"]
        if kind == "fastapi":
            app = fastapi_app(target, self.web["method"], bool(self.web.get("docs")))
        elif kind in ("asgi", "wsgi"):
            app = self.runner._call_sync(target)
            if not callable(app):
                raise TypeError(f"@{kind}_app() function {getattr(target, '__name__', '')} must return an "
                                f"{kind.upper()} app, got {type(app).__name__} (did you forget `return app`?).")
            if kind == "wsgi":
                app = WsgiAdapter(app)
        elif kind == "server":
            app = _start_web_server(self.runner, target, int(self.web["port"]), float(self.web["startup_timeout"]))
        else:
            raise NotImplementedError(f"Web endpoint type {kind!r} is not supported by this container.")
        self.app = app
        if kind == "asgi":
            self._lifespan = _Lifespan(app, self.state)
            asyncio.run_coroutine_threadsafe(self._lifespan.startup(), self.loop).result()

    # -- inputs (called on the reader thread) ---------------------------------------------
    def submit(self, item: dict[str, Any]) -> None:
        self.loop.call_soon_threadsafe(self._begin, item)

    def incoming(self, frame: dict[str, Any]) -> None:
        self.loop.call_soon_threadsafe(self._deliver, frame["id"], frame["msg"])

    def unstarted(self) -> list[int]:
        return [i for i, ex in list(self.exchanges.items()) if not ex.running]

    # -- on the loop ----------------------------------------------------------------------
    def _begin(self, item: dict[str, Any]) -> None:
        exchange = _Exchange(self, item)
        self.exchanges[exchange.id] = exchange
        context = contextvars.copy_context()  # the request's own input and call ids (current_input_id())
        context.run(set_current, input_ids(item))
        task = self.loop.create_task(self._serve(exchange), context=context)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _deliver(self, input_id: int, msg: dict[str, Any]) -> None:
        exchange = self.exchanges.get(input_id)
        if exchange is not None:
            exchange.put(msg)

    async def _serve(self, exchange: _Exchange) -> None:
        runner = self.runner
        async with self.slots:
            exchange.running = True
            runner._track(exchange.id)
            started = time.perf_counter()
            try:
                await self.app(exchange.scope, exchange.receive, exchange.send)
                output: dict[str, Any] = {"status": "ok"}
            except BaseException as error:  # noqa: BLE001 - the app's errors go to the logs
                if isinstance(error, (KeyboardInterrupt, SystemExit)):
                    raise
                traceback.print_exc()
                output = {"status": "error", "exc": serialize_exception(error)}
            finally:
                runner._untrack(exchange.id)
                self.exchanges.pop(exchange.id, None)
        exchange.done = True
        if exchange.pending:
            output["asgi"], exchange.pending = exchange.pending, []
        output.update(id=exchange.id, dur=time.perf_counter() - started)
        runner.uplink.send_outputs([output])

    # -- shutdown -------------------------------------------------------------------------
    def drain(self) -> None:
        """Wait for the inputs in progress, then run the lifespan shutdown (blocking)."""
        asyncio.run_coroutine_threadsafe(self._drain(), self.loop).result()

    async def _drain(self) -> None:
        # HTTP requests in flight finish; WebSocket sessions could last forever: they are closed
        # now with 1012 (service restart, so clients reconnect) and the app sees a disconnect.
        for exchange in list(self.exchanges.values()):
            if exchange.scope["type"] == "websocket" and exchange.running:
                await exchange.send({"type": "websocket.close", "code": 1012, "reason": "service restart"})
                exchange.put({"type": "websocket.disconnect", "code": 1012})
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)
        if self._lifespan is not None:
            await self._lifespan.shutdown()


class _Exchange:
    """The ASGI `receive`/`send` of one input."""

    __slots__ = ("host", "id", "scope", "body", "inbox", "waiter", "pending", "first", "complete",
                 "running", "done")

    def __init__(self, host: WebHost, item: dict[str, Any]) -> None:
        wire = item["args"]["asgi"]
        scope = wire["scope"]
        scope["headers"] = [(name, value) for name, value in scope["headers"]]
        for key in ("client", "server"):
            if scope.get(key) is not None:
                scope[key] = tuple(scope[key])
        scope["asgi"] = ASGI_VERSION
        scope["state"] = dict(host.state)
        self.host = host
        self.id: int = item["id"]
        self.scope = scope
        self.body: bytes = wire.get("body") or b""
        self.inbox: deque[dict[str, Any]] = deque()
        self.waiter: asyncio.Future | None = None
        self.pending: list[dict[str, Any]] = []
        self.first = True
        self.complete = False  # the HTTP response was sent in full (or the WebSocket closed)
        self.running = False
        self.done = False

    def put(self, msg: dict[str, Any]) -> None:
        self.inbox.append(msg)
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def receive(self) -> dict[str, Any]:
        if self.first:
            self.first = False
            if self.scope["type"] == "http":
                return {"type": "http.request", "body": self.body, "more_body": False}
            return {"type": "websocket.connect"}
        while not self.inbox:
            if self.complete:
                if self.scope["type"] == "http":
                    return {"type": "http.disconnect"}
                return {"type": "websocket.disconnect", "code": 1000}
            self.waiter = self.host.loop.create_future()
            await self.waiter
            self.waiter = None
        return self.inbox.popleft()

    async def send(self, msg: dict[str, Any]) -> None:
        if self.done or self.complete:
            return
        kind = msg["type"]
        if kind == "http.response.start":
            msg = {"type": kind, "status": msg["status"], "headers": [tuple(h) for h in msg.get("headers") or ()]}
            self.pending.append(msg)
            self.host.loop.call_soon(self.flush)  # usually the body joins it first (one frame)
            return
        self.pending.append(msg)
        if kind == "websocket.close":
            self.complete = True  # nothing more goes out on this socket
        if kind == "http.response.body" and not msg.get("more_body"):
            self.complete = True
            self._wake()
            self.host.loop.call_soon(self.flush)  # unless the app returns first (then one frame)
            return
        self.flush()

    def flush(self) -> None:
        if self.pending and not self.done:
            messages, self.pending = self.pending, []
            self.host.runner.uplink.send_outputs([{"id": self.id, "status": "item", "asgi": messages}])


class _Lifespan:
    """ASGI lifespan protocol for one app. An app that raises on the lifespan scope before
    answering does not support it, and runs without (as uvicorn's `lifespan="auto"`)."""

    def __init__(self, app: Any, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.supported = True
        self.answered = False
        self.task: asyncio.Task | None = None

    async def _send(self, msg: dict[str, Any]) -> None:
        self.answered = True
        await self.outbox.put(msg)

    async def startup(self) -> None:
        scope = {"type": "lifespan", "asgi": ASGI_VERSION, "state": self.state}
        self.task = asyncio.get_running_loop().create_task(self._run(scope))
        await self.inbox.put({"type": "lifespan.startup"})
        answer = await self.outbox.get()
        if answer["type"] == "lifespan.startup.failed":
            raise RuntimeError(f"The app's lifespan startup failed: {answer.get('message', '')}")

    async def _run(self, scope: dict[str, Any]) -> None:
        try:
            await self.app(scope, self.inbox.get, self._send)
        except BaseException:  # noqa: BLE001
            if not self.answered:
                self.supported = False
                await self.outbox.put({"type": "lifespan.unsupported"})
                return
            traceback.print_exc()
        finally:
            await self.outbox.put({"type": "lifespan.ended"})

    async def shutdown(self) -> None:
        if not self.supported or self.task is None or self.task.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        answer = await self.outbox.get()
        if answer["type"] == "lifespan.shutdown.failed":
            print(f"The app's lifespan shutdown failed: {answer.get('message', '')}", flush=True)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _start_web_server(runner: "ContainerRunner", target: Callable[..., Any], port: int, timeout: float) -> ServerProxy:
    """Run the user's function (which starts a server) in a thread; wait for `port` to open."""
    name = getattr(target, "__name__", "the function")
    # Containers share the host's network. The port may still be held by the previous container
    # of this function, draining after a redeploy or reload: wait for it (at most its drain grace).
    free_by = time.monotonic() + PORT_WAIT_SECONDS
    while _port_open(port):
        if time.monotonic() > free_by:
            raise RuntimeError(
                f"@web_server({port}): port {port} is in use by another process, so {name} cannot serve "
                "there. Containers share this machine's network: stop whatever listens on the port, or "
                "choose another one.")
        time.sleep(0.1)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            runner._call_sync(target)
        except BaseException as error:  # noqa: BLE001
            errors.append(error)
            traceback.print_exc()

    threading.Thread(target=run, name="ferry-web-server", daemon=True).start()
    deadline = time.monotonic() + timeout
    while True:
        if _port_open(port):
            return ServerProxy(port)
        if errors:
            raise RuntimeError(f"@web_server({port}): {name} raised before its server listened: "
                               f"{type(errors[0]).__name__}: {errors[0]}") from errors[0]
        if time.monotonic() > deadline:
            raise TimeoutError(f"@web_server({port}): nothing listened on port {port} within "
                               f"startup_timeout={timeout:g} s of calling {name}. Start the server "
                               f"on port {port} (bound to 0.0.0.0 or 127.0.0.1), or raise startup_timeout.")
        time.sleep(0.02)
