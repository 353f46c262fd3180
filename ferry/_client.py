"""The client's connection to the control plane. Lives on the client loop (see `_sync`).

Requests are matched to responses by id; pushes from the server (`outputs` of a map, `gen`
items of a generator, `log` lines) are routed to per-call queues and the log handler.

A lost connection fails what waits on it with `ConnectionLost`; callers that can resume
(`.remote()`, `.map()`, `.spawn()`, `FunctionCall.get()`) call `reconnect()`, which tries again
with backoff for FERRY_RECONNECT_TIMEOUT, attaches the ephemeral apps this client runs again
and says so once on stderr (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
from typing import Any, Callable

from . import _config
from ._credentials import credential_for, explicit_server_url
from ._protocol import PROTOCOL_VERSION, encode, hello, open_stream, read_frame
from ._serialization import error_from_wire
from ._sync import run_sync
from .exception import AuthError, ConnectionError, Error

LogHandler = Callable[[dict[str, Any]], None]
log = logging.getLogger("ferry.client")
RECONNECTED = "control plane restarted; reconnected"
ACK_HOLD = 0.002  # how long a call.ack may wait to leave with the next frame


class ConnectionLost(ConnectionError):
    """The connection to the server went away while something waited on it; `generation` is
    that connection's (Client.generation counts connections)."""

    def __init__(self, message: str, generation: int = 0) -> None:
        super().__init__(message)
        self.generation = generation


def print_log(entry: dict[str, Any]) -> None:
    """Default log handler: container output to this terminal, as it was written.

    It runs on the client loop, which flushes once per turn what it wrote: lines that arrive
    together leave in one write, and always before the output that followed them reaches its
    caller (that caller's wakeup is scheduled after the flush). A line on the other stream
    flushes the first, so stdout and stderr keep their order too."""
    stream = sys.stderr if entry.get("stream") == "stderr" else sys.stdout
    if _unflushed and _unflushed[0] is not stream:
        _flush_logs()
    stream.write(entry["text"])
    if not _unflushed:
        _unflushed.append(stream)
        try:
            asyncio.get_running_loop().call_soon(_flush_logs)
        except RuntimeError:  # not on a loop: at once
            _flush_logs()


_unflushed: list[Any] = []  # the stream print_log wrote to since its last flush


def _flush_logs() -> None:
    while _unflushed:
        _unflushed.pop().flush()


class Client:
    """One connection to one server, shared by everything in the process that talks to it."""

    _by_url: dict[str, "Client"] = {}

    def __init__(self, url: str) -> None:
        self.url = url
        self.role = ""  # what the server authenticated this client as: admin or container
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._connect_lock: asyncio.Lock | None = None
        self.output_queues: dict[str, asyncio.Queue] = {}
        self.log_handlers: dict[str, LogHandler] = {}
        self.image_handlers: dict[str, LogHandler] = {}  # progress_id -> image build events
        # exec id (a sandbox's id for its entrypoint) -> readers of its output (ferry/_sandbox.py)
        self.sandbox_handlers: dict[str, list[LogHandler]] = {}
        # ephemeral apps this client runs (app id -> whether it follows their logs): attached
        # again after a reconnect, or the server stops them
        self.owned_apps: dict[str, bool] = {}
        self._was_connected = False  # a later connect is a reconnect
        self.generation = 0  # connections made so far
        self._closing = False
        self._reconnect_lock: asyncio.Lock | None = None
        self._gave_up: ConnectionError | None = None  # why the last reconnect failed (until a connect)
        self._background: asyncio.Task | None = None
        self._held_acks: list[bytes] = []  # call.ack frames waiting for the next write (ack())

    # -- finding a client -----------------------------------------------------------------
    @classmethod
    def for_url(cls, url: str) -> "Client":
        client = cls._by_url.get(url)
        if client is None:
            client = cls._by_url[url] = cls(url)
        return client

    @classmethod
    async def from_env(cls) -> "Client":
        """The client for FERRY_SERVER_URL, the active profile's server, or the local server
        (started if needed); it authenticates with the credential `_credentials` finds."""
        url = explicit_server_url()
        if not url:
            from ._local_server import resolve_server_url

            url = await asyncio.get_running_loop().run_in_executor(None, resolve_server_url)
        client = cls.for_url(url)
        await client.ensure_connected()
        return client

    @classmethod
    def from_env_sync(cls) -> "Client":
        return run_sync(cls.from_env())

    # -- connection -----------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self) -> None:
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self.connected:
                return
            credential = credential_for(self.url)
            try:
                reader, writer = await open_stream(self.url, fingerprint=credential.tls_fingerprint,
                                                   ca_file=credential.tls_ca)
            except OSError as exc:
                raise ConnectionError(
                    f"Cannot reach the Ferry server at {self.url}: {exc}. Is it running? "
                    "(`ferry server status`)"
                ) from None
            writer.write(encode(hello("client", **credential.hello_fields())))
            try:
                welcome = await read_frame(reader)
            except (asyncio.IncompleteReadError, OSError) as exc:
                writer.close()
                raise ConnectionError(f"The server at {self.url} closed the connection during the "
                                      f"handshake ({type(exc).__name__}).") from None
            if welcome.get("t") != "welcome":
                writer.close()
                if welcome.get("auth"):
                    raise AuthError(f"The server at {self.url} refused the credential from "
                                    f"{credential.source} ({credential.token_id}): {welcome.get('msg')}")
                raise ConnectionError(f"The server at {self.url} refused the connection: {welcome.get('msg')}")
            self.role = welcome.get("role", "admin")
            if welcome.get("v") != PROTOCOL_VERSION:
                raise ConnectionError(f"Protocol mismatch with server at {self.url}.")
            self._reader, self._writer = reader, writer
            self._was_connected, self._closing = True, False
            self._gave_up = None
            self.generation += 1
            asyncio.create_task(self._read_loop(reader))

    async def ensure_connected(self) -> None:
        """Connect, or, after a lost connection, wait for the server to come back (`reconnect`)."""
        if not self.connected:
            await (self.reconnect() if self._was_connected and not self._closing else self.connect())

    async def reconnect(self) -> None:
        """Connect again after a lost connection, with backoff, for up to FERRY_RECONNECT_TIMEOUT
        seconds; attach this client's ephemeral apps again; say so once on stderr. Raises
        ConnectionError when the server does not come back in time."""
        if self._reconnect_lock is None:
            self._reconnect_lock = asyncio.Lock()
        async with self._reconnect_lock:
            if self.connected:
                return
            if self._gave_up is not None:  # this loss was waited for already, in vain
                raise self._gave_up
            loop = asyncio.get_running_loop()
            timeout = float(_config.get("reconnect_timeout"))
            deadline = loop.time() + timeout
            delay = 0.05
            while True:
                try:
                    await self.connect()
                    break
                except AuthError:
                    raise
                except ConnectionError as exc:
                    if loop.time() + delay > deadline:
                        self._was_connected = False  # later requests try once, as a first connect does
                        self._gave_up = ConnectionError(
                            f"Lost the connection to the Ferry server at {self.url}, and it did not come back "
                            f"within FERRY_RECONNECT_TIMEOUT={timeout:g}s ({exc})")
                        raise self._gave_up from None
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, 1.0)
            for app_id, follow in list(self.owned_apps.items()):
                try:
                    await self.request("app.attach", app_id=app_id)
                    if follow:
                        await self.request("app.subscribe_logs", app_id=app_id)
                except Error as exc:
                    self.owned_apps.pop(app_id, None)
                    print(f"Warning: app {app_id} did not survive the restart of the control plane: {exc}",
                          file=sys.stderr, flush=True)
            print(RECONNECTED, file=sys.stderr, flush=True)

    async def _reconnect_in_background(self) -> None:
        """After a lost connection with no caller waiting: attach the apps again in time."""
        try:
            await self.reconnect()
        except Exception as exc:  # noqa: BLE001 - the next request reports it
            log.warning("%s", exc)

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                frame = await read_frame(reader)
                kind = frame.get("t")
                if kind == "res":
                    future = self._pending.pop(frame["id"], None)
                    if future is not None and not future.done():
                        if frame.get("ok"):
                            future.set_result(frame.get("r"))
                        else:
                            future.set_exception(_wire_error(frame["e"]))
                elif kind == "push":
                    self._on_push(frame)
        except (asyncio.IncompleteReadError, OSError, ConnectionError):
            pass
        finally:
            self._lost()

    def _lost(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = None
        error = ConnectionLost(
            f"Lost the connection to the Ferry server at {self.url} (did it stop or restart?).",
            self.generation)
        if self.owned_apps and not self._closing and (self._background is None or self._background.done()):
            self._background = asyncio.ensure_future(self._reconnect_in_background())
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)
        for queue in self.output_queues.values():
            queue.put_nowait(error)
        for handlers in list(self.sandbox_handlers.values()):
            for handler in list(handlers):
                handler({"k": "lost", "error": error})

    def _on_push(self, frame: dict[str, Any]) -> None:
        kind = frame.get("k")
        if kind == "outputs":
            queue = self.output_queues.get(frame["call"])
            if queue is not None:
                queue.put_nowait(frame["items"])
        elif kind == "gen":
            queue = self.output_queues.get(frame["call"])
            if queue is not None:
                queue.put_nowait([frame["item"]])
        elif kind == "log":
            handler = self.log_handlers.get(frame.get("app", ""))
            if handler is not None:
                handler(frame)
        elif kind == "image":
            handler = self.image_handlers.get(frame.get("id", ""))
            if handler is not None:
                handler(frame)
        elif kind in ("sandbox.out", "sandbox.exit"):
            for handler in list(self.sandbox_handlers.get(frame.get("exec_id", ""), ())):
                handler(frame)

    def send(self, message: dict[str, Any]) -> None:
        if not self.connected:
            raise ConnectionError(f"Not connected to the Ferry server at {self.url}.")
        assert self._writer is not None
        data = encode(message)
        if self._held_acks:  # they leave first, in the same write
            data = b"".join(self._held_acks) + data
            self._held_acks.clear()
        self._writer.write(data)

    async def drain(self) -> None:
        if self._writer is not None:
            await self._writer.drain()

    async def request(self, method: str, /, **args: Any) -> Any:
        await self.ensure_connected()
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self.send({"t": "req", "id": request_id, "m": method, "a": args})
        return await future

    def notify(self, method: str, /, **args: Any) -> None:
        """Send a request now, whose answer nobody waits for (it is dropped when it comes): its
        frame leaves before any request this client sends afterwards."""
        self.send({"t": "req", "id": next(self._ids), "m": method, "a": args})

    def request_sync(self, method: str, /, **args: Any) -> Any:
        return run_sync(self.request(method, **args))

    def ack(self, call_id: str, idxs: list[int] | None = None) -> None:
        """Tell the server this client has the outputs `idxs` of a call (None: all of them), so
        that it forgets them; a lost connection is no error (a resumed call says it again).
        The acknowledgement waits up to ACK_HOLD for the next frame, to leave in one write
        with it (a map's acknowledgements leave with its next inputs)."""
        self._held_acks.append(encode({"t": "push", "k": "call.ack", "call": call_id,
                                       **({} if idxs is None else {"idxs": idxs})}))
        if len(self._held_acks) == 1:
            asyncio.get_running_loop().call_later(ACK_HOLD, self._release_acks)

    def _release_acks(self) -> None:
        if self._held_acks and self.connected:
            assert self._writer is not None
            self._writer.write(b"".join(self._held_acks))
        self._held_acks.clear()

    async def close(self) -> None:
        self._closing = True
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _wire_error(payload: dict[str, str]) -> BaseException:
    if payload.get("type") == "NotImplementedError":
        return NotImplementedError(payload.get("msg", ""))
    return error_from_wire(payload)

