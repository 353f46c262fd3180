"""One HTTP request or WebSocket session, carried through the function's pool as one input.

    gateway (server loop)                          container (ferry/_container/web.py)
    read body (<= FERRY_WEB_MAX_BODY_SIZE, else 413)
    submit input {"asgi": {scope, body}}   ---->   app(scope, receive, send)
    Mailbox <- outputs items {status: item, asgi}  <----  ASGI messages (streamed)
    Mailbox <- final output {status: ok|error.., asgi?}
    client disconnect / WebSocket frames   ---->   push web.in {id, msg}

The request waits for `http.response.start` at most FERRY_WEB_REQUEST_TIMEOUT seconds (504);
then the response streams for as long as the app sends it. Requests are never retried: a
response may already have reached the client.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from ..model import Call, Input, OutputStatus, Pool

if TYPE_CHECKING:
    from ..scheduler import Scheduler

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

_EXPIRED = {"status": "_expired"}
_GONE = {"status": "_gone"}
_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]


class Mailbox:
    """Outputs of one request's input, handed from the scheduler to the waiting request."""

    __slots__ = ("items", "waiter", "entry")

    def __init__(self) -> None:
        self.items: deque[dict[str, Any]] = deque()
        self.waiter: asyncio.Future | None = None
        self.entry: Input | None = None

    def deliver(self, entry: Input, item: dict[str, Any]) -> None:
        self.entry = entry
        self.put(item)

    def put(self, item: dict[str, Any]) -> None:
        self.items.append(item)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> dict[str, Any]:
        while not self.items:
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
            self.waiter = None
        return self.items.popleft()


async def respond(send: Send, status: int, text: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A small plain-text response made by the gateway itself (errors, redirects)."""
    body = (text.rstrip("\n") + "\n").encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [*_TEXT, (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def failure_response(pool: Pool, item: dict[str, Any]) -> tuple[int, str]:
    """Status and text for an input that ended without a response."""
    status = item.get("status")
    where = f"`ferry app logs {pool.app.name}`"
    if status == OutputStatus.ERROR.value:
        kind = (item.get("exc") or {}).get("type") or "an exception"
        return 500, f"Internal Server Error: the endpoint raised {kind}; its traceback is in {where}."
    if status == OutputStatus.INIT_ERROR.value:
        detail = (item.get("exc") or {}).get("repr") or item.get("msg", "")
        return 503, f"The endpoint's container failed to start: {detail}\nSee {where}."
    if status == OutputStatus.TIMEOUT.value:
        return 504, f"The endpoint ran past its function timeout. {item.get('msg', '')}"
    if status in (OutputStatus.CRASH.value, OutputStatus.OOM.value):
        return 502, f"The container serving this request ended: {item.get('msg', '')}"
    if status == OutputStatus.OK.value:
        return 500, "The endpoint's app finished without sending a response."
    return 503, f"The endpoint is unavailable ({status}): {item.get('msg', '')}"


class Exchange:
    """Drive one request: submit its input, relay its messages, clean up when abandoned."""

    def __init__(self, scheduler: "Scheduler", pool: Pool, timeout: float, method: str | None = None) -> None:
        self.scheduler = scheduler
        self.pool = pool
        self.method = method  # the web method of a class serving it; None for a function
        self.timeout = timeout
        self.box = Mailbox()
        self.call = Call(id="fc-" + secrets.token_hex(8), pool=pool, kind="web", deliver=self.box.deliver,
                         closed=True, retries=False)
        self.done = False

    def submit(self, scope: dict[str, Any], body: bytes | None) -> None:
        self.scheduler.open_call(self.call)
        self.scheduler.submit(self.call, [(0, {"asgi": {"scope": scope, "body": body}}, self.method)])

    def _entry(self) -> Input | None:
        if self.box.entry is not None:
            return self.box.entry
        for container in self.pool.containers.values():
            for entry in container.inflight.values():
                if entry.call is self.call:
                    return entry
        return None

    def push_to_container(self, msg: dict[str, Any]) -> None:
        entry = self._entry()
        if entry is not None and entry.container is not None and entry.container.conn is not None:
            entry.container.conn.push("web.in", id=entry.id, msg=msg)

    def abandon(self, msg_type: str = "http.disconnect") -> None:
        """The client went away or timed out: drop a queued input; tell a running one."""
        if self.call.cancelled:
            return
        self.push_to_container({"type": msg_type, "code": 1001} if msg_type == "websocket.disconnect"
                               else {"type": msg_type})
        self.scheduler.cancel(self.call)  # the running input finishes; its output is dropped

    # -- HTTP -----------------------------------------------------------------------------
    async def http(self, scope: dict[str, Any], body: bytes, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        self.submit(scope, body)
        timer = loop.call_later(self.timeout, self.box.put, _EXPIRED)
        watcher = asyncio.ensure_future(receive())
        watcher.add_done_callback(self._client_event)
        started = complete = False
        try:
            while True:
                item = await self.box.get()
                status = item["status"]
                if item is _GONE:
                    return
                if item is _EXPIRED:
                    if not started:
                        self.abandon()
                        await respond(send, 504, f"Gateway Timeout: the endpoint did not start a response "
                                                 f"within {self.timeout:g} s (FERRY_WEB_REQUEST_TIMEOUT).")
                        return
                    continue
                for msg in item.get("asgi") or ():
                    if msg["type"] == "http.response.start":
                        started = True
                        timer.cancel()
                    await send(msg)
                    if msg["type"] == "http.response.body" and not msg.get("more_body"):
                        complete = True
                        return  # the app may still run (background tasks)
                if status == OutputStatus.ITEM.value:
                    continue
                if started:  # the app ended mid-response: cut the connection so the client sees it
                    raise ConnectionAbortedError(f"the endpoint {self.pool.tag} ended mid-response ({status})")
                code, text = failure_response(self.pool, item)
                await respond(send, code, text)
                return
        finally:
            self.done = True
            timer.cancel()
            if not watcher.done():
                watcher.cancel()
            if not complete:  # also when sending failed or the gateway is stopping
                self.abandon()

    def _client_event(self, watcher: asyncio.Future) -> None:
        if self.done or watcher.cancelled() or watcher.exception() is not None:
            return
        if watcher.result().get("type") == "http.disconnect":
            self.abandon()
            self.box.put(_GONE)

    # -- WebSocket ------------------------------------------------------------------------
    async def websocket(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        loop = asyncio.get_running_loop()
        self.submit(scope, None)
        timer = loop.call_later(self.timeout, self.box.put, _EXPIRED)
        pump: asyncio.Task | None = None
        closed = False
        try:
            while True:
                item = await self.box.get()
                if item is _GONE:
                    return
                if item is _EXPIRED:
                    if pump is None:
                        self.abandon("websocket.disconnect")
                        await send({"type": "websocket.close", "code": 1011,
                                    "reason": "the endpoint did not accept the WebSocket in time"})
                        return
                    continue
                for msg in item.get("asgi") or ():
                    kind = msg["type"]
                    if kind == "websocket.accept":
                        timer.cancel()
                        pump = asyncio.ensure_future(self._pump_client(receive))
                    elif kind == "websocket.close":
                        closed = True
                    await send(msg)
                if item["status"] == OutputStatus.ITEM.value:
                    continue
                if not closed:
                    ok = item["status"] == OutputStatus.OK.value
                    await send({"type": "websocket.close", "code": 1000 if ok else 1011,
                                "reason": "" if ok else failure_response(self.pool, item)[1][:120]})
                return
        finally:
            self.done = True
            timer.cancel()
            if pump is not None and not pump.done():
                pump.cancel()
            self.abandon("websocket.disconnect")  # a no-op once the input has ended

    async def _pump_client(self, receive: Receive) -> None:
        """Client frames to the container, until the client disconnects."""
        while True:
            msg = await receive()
            if self.done:
                return
            if msg["type"] == "websocket.disconnect":
                self.abandon("websocket.disconnect")
                self.box.put(_GONE)
                return
            self.push_to_container(msg)
