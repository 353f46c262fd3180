"""Container logs: kept in the store for `ferry app logs`, and streamed live to subscribers."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any, Callable

from .connection import Connection
from .store import Store


class LogHub:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._subscribers: dict[str, set[Connection]] = defaultdict(set)
        self._listeners: list[Callable[[dict[str, Any]], None]] = []  # every app's lines (the dashboard)

    def subscribe(self, app_id: str, conn: Connection) -> None:
        self._subscribers[app_id].add(conn)
        conn.on_close.append(lambda: self._subscribers[app_id].discard(conn))

    def listen(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call `callback` with every new line of every app, `{app_id, function, container,
        stream, ts, text}`, until the returned function is called."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def add(self, app_id: str, function: str, container_id: str, stream: str, text: str) -> None:
        if not text:
            return
        ts = time.time()
        self._store.add_log(app_id, function, container_id, stream, ts, text)
        for conn in list(self._subscribers.get(app_id, ())):
            # held briefly: a line and the output that follows it reach the client in one write
            conn.push_soon("log", app=app_id, function=function, container=container_id,
                           stream=stream, ts=ts, text=text)
        if self._listeners:
            entry = {"app_id": app_id, "function": function, "container": container_id, "stream": stream,
                     "ts": ts, "text": text}
            for listener in list(self._listeners):
                listener(entry)

    def flush(self) -> None:
        self._store.flush_logs()
