"""The dashboard's live feed, which the overview page's script (dashboard_page.py) renders:

    GET /_dashboard/state    one JSON snapshot (`LiveFeed.snapshot`)
    GET /_dashboard/events   server-sent events (text/event-stream):
                               state  a snapshot, at once and then every STATE_EVERY seconds
                               log    each new log line of any app (the last HISTORY_LINES first)
    GET /_dashboard/events?app=APP_ID   the same, with the log lines of that app only (its page)

A snapshot: `{server, apps, functions, containers, calls: {in_flight, recent}, images, gpus}`
(times in epoch seconds); `images` lists the builds running now (state `building`, with the
step they are at), then the last RECENT_IMAGES images built or failed. It holds what `ferry app list`, `ferry container list` and
`ferry image list` show, and never a secret value (function settings are not part of it). The
gateway applies the dashboard's rule to both paths (login.py): open on loopback, a logged-in
session beyond it (else 401).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from ..container_rpc import describe_container
from ..model import ContainerState
from ..scheduler import describe_call
from .exchange import Receive, Send, respond

if TYPE_CHECKING:
    from ..server import Server

FEED_PREFIX = "/_dashboard/"
STATE_PATH = FEED_PREFIX + "state"
EVENTS_PATH = FEED_PREFIX + "events"
STATE_EVERY = 1.0
HISTORY_LINES = 200
RECENT_IMAGES = 20
MAX_BACKLOG = 2000  # log lines waiting for a slow reader; past this the oldest are dropped


def is_feed_path(path: str) -> bool:
    return path.startswith(FEED_PREFIX)


class LiveFeed:
    """Snapshots of the control plane and the stream of its log lines."""

    def __init__(self, server: "Server") -> None:
        self.server = server
        self._closing = asyncio.Event()

    def close(self) -> None:
        """End every open stream (the gateway is stopping)."""
        self._closing.set()

    async def handle(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        method = scope.get("method")
        if method not in ("GET", "HEAD"):
            await respond(send, 405, "The dashboard's feed is read-only: use GET.", [(b"allow", b"GET, HEAD")])
            return
        if scope["path"] == STATE_PATH:
            body = json.dumps(await self.snapshot()).encode()
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store")]})
            await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
        elif scope["path"] == EVENTS_PATH and method == "GET":
            query = parse_qs((scope.get("query_string") or b"").decode("latin-1"))
            await self.stream(receive, send, app_id=(query.get("app") or [None])[0])
        else:
            await respond(send, 404, f"No such feed: {scope['path']} (there are {STATE_PATH} and {EVENTS_PATH}).")

    # -- the snapshot ---------------------------------------------------------------------
    async def snapshot(self) -> dict[str, Any]:
        server = self.server
        info = await server.api.server_status(None, {})  # type: ignore[arg-type]
        apps = await server.api.app_list(None, {})  # type: ignore[arg-type]
        live = [c for c in server.containers.containers.values() if c.state is not ContainerState.STOPPED]
        functions = []
        for pool in server.scheduler.pools.values():
            if not pool.app.live:
                continue
            mine = [c for c in live if c.pool is pool]
            functions.append({
                "app": pool.app.name, "app_id": pool.app.id, "function": pool.tag, "function_id": pool.function_id,
                "kind": pool.definition.get("kind"), "queued": len(pool.queue), "containers": len(mine),
                "running": sum(len(c.inflight) for c in mine), "calls": pool.stats.exec_count,
                "mean_seconds": pool.stats.exec_total / pool.stats.exec_count if pool.stats.exec_count else None,
                "init_error": (pool.last_init_error or {}).get("repr")})
        in_flight = [describe_call(call) for call in server.scheduler.calls.values()]
        images = sorted(server.images.list_images()["images"], key=lambda r: r.get("created") or 0)[-RECENT_IMAGES:]
        free = {device.index for device in server.gpus.free_devices()}
        return {
            "server": {key: info.get(key) for key in ("version", "runtime", "url", "web_url", "started", "gpus")},
            "now": time.time(),
            "apps": [{key: row.get(key) for key in ("id", "name", "state", "functions", "containers", "created")}
                     for row in reversed(apps)],
            "functions": functions,
            "containers": [describe_container(c) for c in sorted(live, key=lambda c: c.started)],
            "calls": {"in_flight": sorted(in_flight, key=lambda c: c["started"]),
                      "recent": list(reversed(server.scheduler.recent))},
            "images": server.images.building.list() + [
                {key: record.get(key) for key in ("key", "label", "state", "python_version", "size", "created",
                                                  "last_step")} for record in reversed(images)],
            "gpus": [{"index": d.index, "type": d.type, "name": d.name, "memory_mb": d.memory_mb,
                      "free": d.index in free} for d in server.gpus.devices],
        }

    def history(self, app_id: str | None = None) -> list[dict[str, Any]]:
        """The last HISTORY_LINES log lines of the apps the server holds (or of `app_id`, also
        once stopped), oldest first."""
        lines = []
        for app in [app_id] if app_id else list(self.server.apps):
            for entry in self.server.store.log_tail(app, HISTORY_LINES):
                lines.append(self._log_event(app, entry["function"], entry["container_id"], entry["stream"],
                                             entry["ts"], entry["text"], seq=entry["seq"]))
        return sorted(lines, key=lambda line: line["seq"])[-HISTORY_LINES:]

    def _log_event(self, app_id: str, function: str, container: str, stream: str, ts: float, text: str,
                   seq: int | None = None) -> dict[str, Any]:
        app = self.server.apps.get(app_id)
        return {"app": app.name if app is not None else app_id, "app_id": app_id, "function": function,
                "container": container, "stream": stream, "ts": ts, "text": text, "seq": seq}

    # -- the stream -----------------------------------------------------------------------
    async def stream(self, receive: Receive, send: Send, *, app_id: str | None = None) -> None:
        """Server-sent events until the browser goes away or the gateway stops (log lines of
        `app_id` only, when given)."""
        backlog: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        def on_line(entry: dict[str, Any]) -> None:
            if app_id is not None and entry["app_id"] != app_id:
                return
            if backlog.qsize() >= MAX_BACKLOG:
                backlog.get_nowait()
            backlog.put_nowait(self._log_event(entry["app_id"], entry["function"], entry["container"],
                                               entry["stream"], entry["ts"], entry["text"]))

        stop_listening = self.server.logs.listen(on_line)
        gone = asyncio.ensure_future(_disconnected(receive))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-store"),
                (b"x-accel-buffering", b"no")]})
            await _event(send, "state", await self.snapshot())
            for line in self.history(app_id):
                await _event(send, "log", line)
            next_state = time.monotonic() + STATE_EVERY
            while not gone.done() and not closing.done():
                line_ready = asyncio.ensure_future(backlog.get())
                await asyncio.wait([line_ready, gone, closing], timeout=max(0.0, next_state - time.monotonic()),
                                   return_when=asyncio.FIRST_COMPLETED)
                if line_ready.done():
                    await _event(send, "log", line_ready.result())
                    while not backlog.empty():
                        await _event(send, "log", backlog.get_nowait())
                else:
                    line_ready.cancel()
                if time.monotonic() >= next_state:
                    await _event(send, "state", await self.snapshot())
                    next_state = time.monotonic() + STATE_EVERY
            if not gone.done():
                await send({"type": "http.response.body", "body": b""})
        except OSError:  # the browser went away while we wrote
            pass
        finally:
            stop_listening()
            gone.cancel()
            closing.cancel()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _event(send: Send, name: str, data: Any) -> None:
    payload = f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"
    await send({"type": "http.response.body", "body": payload.encode(), "more_body": True})
