"""One peer connected to the control plane (a client or a container), speaking frames."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any, Awaitable, Callable

import msgpack

from .._protocol import encode, error_payload, read_frame
from ..exception import Error, InvalidError
from .disk import full_disk_message, is_full_disk

log = logging.getLogger("ferry.server")

Handler = Callable[["Connection", dict[str, Any]], Awaitable[Any]]


# how long a held push (push_soon) may wait for the next frame to the same peer
HOLD_SECONDS = 0.002


class Connection:
    """Writes are buffered by asyncio; pushed outputs are coalesced per call until the loop
    next turns, so a burst of outputs leaves as one frame; held pushes (log lines) leave in
    one write with the next frame, so the peer wakes once for a line and the output after it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.role = "unknown"
        self.peer_id = ""
        self.principal: Any = None  # server/access.Principal, once the hello is authenticated
        self.closed = False
        self.on_close: list[Callable[[], None]] = []
        self._pending_outputs: dict[str, list[dict]] = defaultdict(list)
        self._flush_scheduled = False
        self._held: list[bytes] = []
        self._release_timer: asyncio.TimerHandle | None = None

    def send(self, message: dict[str, Any]) -> None:
        # (a peer that went away before this connection noticed: its transport is closing, and
        # uvloop refuses writes to it; e.g. the answer to a sandbox supervisor's last request)
        if self.closed or self.writer.is_closing():
            return
        data = encode(message)
        if self._held:
            data = self._take_held() + data
        self.writer.write(data)

    def push(self, kind: str, **fields: Any) -> None:
        self.send({"t": "push", "k": kind, **fields})

    def push_soon(self, kind: str, **fields: Any) -> None:
        """A push that waits up to HOLD_SECONDS to leave in one write with the next frame to
        this peer; frames keep their order (a held push goes before anything sent later)."""
        if self.closed:
            return
        self._held.append(encode({"t": "push", "k": kind, **fields}))
        if self._release_timer is None:
            self._release_timer = asyncio.get_running_loop().call_later(HOLD_SECONDS, self._release)

    def _release(self) -> None:
        self._release_timer = None
        if self._held and not self.closed and not self.writer.is_closing():
            self.writer.write(self._take_held())

    def _take_held(self) -> bytes:
        held, self._held = self._held, []
        if self._release_timer is not None:
            self._release_timer.cancel()
            self._release_timer = None
        return b"".join(held)

    def push_output(self, call_id: str, item: dict[str, Any]) -> None:
        self._pending_outputs[call_id].append(item)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_outputs)

    def _flush_outputs(self) -> None:
        self._flush_scheduled = False
        pending, self._pending_outputs = self._pending_outputs, defaultdict(list)
        for call_id, items in pending.items():
            self.push("outputs", call=call_id, items=items)

    async def serve(self, handlers: dict[str, Handler], on_push: Callable[["Connection", dict], None]) -> None:
        """Read frames until the peer goes away; run each request as its own task."""
        try:
            while True:
                try:
                    frame = await read_frame(self.reader)
                except (ValueError, TypeError, msgpack.UnpackException) as exc:  # not msgpack
                    log.warning("closing the connection of %s %s: unreadable frame (%s)", self.role,
                                self.peer_id, exc)
                    return
                if not isinstance(frame, dict) or (frame.get("t") == "req" and not isinstance(frame.get("id"), int)):
                    log.warning("closing the connection of %s %s: a frame that is not a request, a "
                                "response or a push", self.role, self.peer_id)
                    return
                kind = frame.get("t")
                if kind == "req":
                    asyncio.create_task(self._answer(handlers, frame))
                elif kind == "push":
                    try:
                        on_push(self, frame)
                    except Exception:  # a bug handling one message must not drop the peer
                        log.exception("handling a %r push from %s %s failed", frame.get("k"),
                                      self.role, self.peer_id)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self.close()

    async def _answer(self, handlers: dict[str, Handler], frame: dict[str, Any]) -> None:
        method = frame.get("m", "")
        handler = handlers.get(method) if isinstance(method, str) else None
        try:
            if handler is None:
                raise InvalidError(f"Unknown method {method!r}: is the client newer than the server?")
            arguments = frame.get("a")
            result = await handler(self, {} if arguments is None else arguments)
            self.send({"t": "res", "id": frame["id"], "ok": True, "r": result})
        except Error as exc:
            self.send({"t": "res", "id": frame["id"], "ok": False, "e": error_payload(exc)})
        except NotImplementedError as exc:
            self.send({"t": "res", "id": frame["id"], "ok": False,
                       "e": {"type": "NotImplementedError", "msg": str(exc)}})
        except Exception as exc:  # a bug in the server (or a full disk): report it, keep serving
            if is_full_disk(exc):
                log.warning("request %s failed: the disk is full (%s)", method, exc)
                self.send({"t": "res", "id": frame["id"], "ok": False,
                           "e": {"type": "ServerError", "msg": full_disk_message(exc, method)}})
                return
            log.exception("request %s failed", method)
            self.send({"t": "res", "id": frame["id"], "ok": False,
                       "e": {"type": "ServerError", "msg": f"{type(exc).__name__}: {exc}"}})

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if self._held:  # held lines still leave (the transport writes them before closing)
                self.writer.write(self._take_held())
            self.writer.close()
        except Exception:
            pass
        callbacks, self.on_close = self.on_close, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("on_close callback failed")
