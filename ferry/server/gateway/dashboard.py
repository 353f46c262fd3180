"""The dashboard, served by the web gateway at `http://127.0.0.1:<web port>/` (requests that
name no endpoint label).

    /                  overview, live: apps, functions (queue depth, containers), containers
                       (node, state), calls in flight and recent ones (durations, errors),
                       streaming logs, image builds, GPUs; its script (dashboard_page.py) follows
                       the live feed (live.py) and redraws without a reload
    /apps/<name-or-id> one app: functions and their settings, schedules, web URLs,
                       containers, the last LOG_LINES log lines
    /_dashboard/...    the live feed: a JSON snapshot and a server-sent event stream (live.py)

Pages are built from the same answers as the wire API (`server.status`, `app.list`,
`app.show`: api.py), so the dashboard and the CLI agree. Every value is HTML-escaped (the
script sets text, never HTML). No secret value is ever rendered: function configs hold only
secret names, and container environments are not shown. No external assets, no build step
(works offline); without JavaScript the overview is a static page.
"""

from __future__ import annotations

import time
from datetime import datetime
from html import escape
from typing import TYPE_CHECKING, Any, Iterable
from urllib.parse import quote, unquote

from ...exception import NotFoundError
from .dashboard_page import SCRIPT, SECTIONS
from .exchange import Receive, Send
from .live import EVENTS_PATH, LiveFeed, is_feed_path

if TYPE_CHECKING:
    from ..server import Server

LOG_LINES = 200
APP_PREFIX = "/apps/"
# config keys shown as a function's settings (a whitelist: nothing else from a config is rendered)
SETTINGS = ("gpu", "cpu", "memory", "timeout", "max_inputs", "min_containers", "max_containers",
            "buffer_containers", "scaledown_window")

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em}a{color:#1a5fb4}
table{border-collapse:collapse;width:100%;margin:.5em 0}th,td{border-bottom:1px solid #ddd;
padding:.3em .6em;text-align:left;vertical-align:top}th{background:#f4f4f4}
.muted{color:#777}.state-running,.state-deployed,.state-ready{color:#26802b}.state-stopped{color:#999}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:12px;white-space:pre-wrap}
.err{color:#b00}#live-status{font-size:.6em;vertical-align:middle;padding:.15em .6em;border-radius:1em;
background:#eee;color:#777}#live-status.live{background:#e3f4e4;color:#26802b}
#logs{max-height:28em;overflow-y:auto}.log-line.err{color:#b00}
"""


def is_dashboard_path(path: str) -> bool:
    """Whether the gateway should hand a request for `path` (no endpoint label) to the dashboard."""
    return path == "/" or path.startswith(APP_PREFIX) or is_feed_path(path)


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _cell(value: Any) -> str:
    return "-" if value is None or value == "" else escape(str(value))


def _table(headers: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """A table; `rows` hold already-escaped HTML cells."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{f'<tr>{head}</tr>' if head else ''}{body}</table>"


def _page(title: str, body: str, script: str = "", feed: str = "") -> str:
    """A page; `script` runs at its end and follows the live feed `feed` names (default: all)."""
    attributes = f' data-feed="{escape(feed, quote=True)}"' if feed else ""
    tail = f"<script>{script}</script>" if script else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{_CSS}</style></head><body{attributes}>{body}{tail}</body></html>")


def _state(value: str) -> str:
    return f"<span class='state-{escape(value)}'>{escape(value)}</span>"


def _settings(config: dict[str, Any]) -> str:
    parts = []
    for key in SETTINGS:
        value = config.get(key)
        if value is None:
            continue
        if key == "gpu" and isinstance(value, dict):
            value = " or ".join(f"{o.get('count', 1)}x {o.get('type')}" for o in value.get("options", [])) or value
        parts.append(f"{key}={value}")
    secrets = [ref.get("name") for ref in config.get("secrets") or [] if isinstance(ref, dict)]
    if secrets:  # names only (anonymous secrets are named by a keyed digest, never by value)
        parts.append("secrets=" + ",".join(str(n) for n in secrets))
    volumes = config.get("volumes")
    if volumes:
        parts.append(f"volumes={len(volumes)}")
    return escape("; ".join(parts)) or "<span class='muted'>defaults</span>"


class Dashboard:
    """Renders the pages; `handle` answers one HTTP request."""

    def __init__(self, server: "Server") -> None:
        self.server = server
        self.live = LiveFeed(server)

    async def handle(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if is_feed_path(scope["path"]):
            await self.live.handle(scope, receive, send)
            return
        if scope.get("method") not in ("GET", "HEAD"):
            await self._send(send, 405, _page("Method not allowed", "<h1>The dashboard is read-only</h1>"),
                             [(b"allow", b"GET, HEAD")])
            return
        path: str = scope["path"]
        try:
            if path == "/":
                status, html = 200, await self.overview()
            else:
                status, html = 200, await self.app_page(unquote(path[len(APP_PREFIX):]).strip("/"))
        except NotFoundError as exc:
            status, html = 404, _page("Not found", f"<h1>Not found</h1><p>{escape(str(exc))}</p>"
                                                   "<p><a href='/'>Back to the overview</a></p>")
        await self._send(send, status, html, head=scope.get("method") == "HEAD")

    @staticmethod
    async def _send(send: Send, status: int, html: str, headers: list | None = None, *, head: bool = False) -> None:
        body = html.encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"), *(headers or [])]})
        await send({"type": "http.response.body", "body": b"" if head else body})

    # -- pages ----------------------------------------------------------------------------
    async def overview(self) -> str:
        api = self.server.api
        info = await api.server_status(None, {})  # type: ignore[arg-type]
        apps = await api.app_list(None, {})  # type: ignore[arg-type]
        rows = [[f"<a href='{APP_PREFIX}{quote(r['id'])}'>{escape(r['name'])}</a>", _cell(r["id"]),
                 _state(str(r["state"])), _cell(r.get("functions")), _cell(r.get("containers")),
                 _cell(_when(r.get("created")))] for r in reversed(apps)]
        summary = _table((), [
            ["version", _cell(info["version"])], ["control plane", _cell(info["url"])],
            ["state directory", _cell(info["home"])], ["runtime", _cell(info["runtime"])],
            ["GPUs", f"<span id='gpu-summary'>{_cell(info['gpus'])}</span>"],
            ["web endpoints", _cell(info["web_url"] + "/_/LABEL/")],
            ["started", _cell(_when(info.get("started")))],
            ["live apps / containers",
             f"<span id='live-counts'>{_cell(str(info['apps']) + ' / ' + str(info['containers']))}</span>"]])
        first = {"apps": _table(("name", "id", "state", "functions", "containers", "created"), rows) if rows
                 else "<p class='muted'>No apps yet: <code>ferry run</code> or <code>ferry deploy</code> one.</p>"}
        sections = "".join(
            f"<h2>{escape(heading)}</h2>" + ("<pre id='logs'><span class='muted'>No output yet.</span></pre>"
                                             if key == "logs" else
                                             f"<div id='{key}'>{first.get(key, '')}</div>")
            for key, heading in SECTIONS)
        body = (f"<h1>Ferry {escape(info['version'])} <span id='live-status'>static</span></h1>{summary}"
                + sections)
        return _page("Ferry dashboard", body, SCRIPT)

    async def app_page(self, ref: str) -> str:
        if not ref:
            raise NotFoundError("Name an app: /apps/NAME-OR-ID.")
        try:
            app = await self.server.api.app_show(None, {"app": ref})  # type: ignore[arg-type]
        except NotFoundError:  # a recently stopped app: its record and logs are still there
            rows = [r for r in self.server.store.apps() if ref in (r["id"], r["name"])]
            if not rows:
                raise
            row = rows[-1]
            app = {"app_id": row["id"], "name": row["name"], "state": row["state"],
                   "created": row.get("created"), "functions": []}
        functions = [[escape(f["tag"]) + (" <span class='muted'>(bound)</span>" if f.get("bound") else ""),
                      _cell(f.get("kind")), _settings(f.get("config") or {}), _cell(f.get("queued")),
                      self._schedule(f.get("schedule")), self._urls(f),
                      f"<span class='err'>{escape(f['init_error'])}</span>" if f.get("init_error") else "-"]
                     for f in app["functions"]]
        containers = [[_cell(c["id"]), escape(f["tag"]), _state(c["state"]), _cell(c.get("inflight")),
                       _cell(_when(self._started(f["function_id"], c["id"]))),
                       _cell(None if c.get("boot_seconds") is None else f"{c['boot_seconds']:.2f} s"),
                       _cell((c.get("node") or "")[:12] or None)]  # its Ray node (ray runtime)
                      for f in app["functions"] for c in f.get("containers") or []]
        logs = self.server.store.log_tail(app["app_id"], LOG_LINES)
        log_text = "\n".join(f"{_when(e['ts'])} {e['function'] or ''} {e['text'].rstrip()}" for e in logs)
        body = (f"<p><a href='/'>&larr; overview</a></p><h1>{escape(app['name'])} {_state(app['state'])} "
                "<span id='live-status'>static</span></h1>"
                f"<p class='muted'>{escape(app['app_id'])}, created {escape(_when(app.get('created')))}</p>"
                "<h2>Functions</h2>"
                + _table(("function", "kind", "settings", "queued", "schedule (next run)", "web URL", "init error"),
                         functions)
                + "<h2>Containers</h2>"
                + (_table(("id", "function", "state", "inputs running", "started", "boot", "node"), containers)
                   if containers else "<p class='muted'>No containers.</p>")
                + f"<h2>Logs <span class='muted'>(the last {LOG_LINES} lines, then new ones live)</span></h2>"
                + f"<pre id='logs'>{escape(log_text) or '<span class=muted>No output yet.</span>'}</pre>")
        return _page(f"{app['name']} - Ferry", body, SCRIPT, feed=f"{EVENTS_PATH}?app={quote(app['app_id'])}")

    # -- pieces ---------------------------------------------------------------------------
    @staticmethod
    def _schedule(schedule: dict[str, Any] | None) -> str:
        if not schedule:
            return "-"
        return f"{escape(schedule['schedule'])} ({escape(_when(schedule.get('next_run')))})"

    @staticmethod
    def _urls(function: dict[str, Any]) -> str:
        links = [f"<a href='{escape(u, quote=True)}'>{escape(u)}</a>"
                 for u in (function.get("web_url"), function.get("web_path_url")) if u]
        return "<br>".join(links) or "-"

    def _started(self, function_id: str, container_id: str) -> float | None:
        """A container's launch as epoch seconds (containers record it on the monotonic clock)."""
        pool = self.server.scheduler.pools.get(function_id)
        container = pool.containers.get(container_id) if pool is not None else None
        if container is None:
            return None
        return time.time() - (time.monotonic() - container.launched_at)
