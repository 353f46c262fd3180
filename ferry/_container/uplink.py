"""The container's connection to the control plane: one socket, one reader thread.

Everything the container says goes through `Uplink.send` under one lock, so log lines and
outputs reach the server in the order the user's code produced them.
"""

from __future__ import annotations

import io
import itertools
import threading
from typing import Any, Callable

from .._protocol import FrameSocket
from ..exception import ConnectionError
from .._serialization import error_from_wire


class Uplink:
    def __init__(self, sock: FrameSocket) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._waiting: dict[int, tuple[threading.Event, list[Any]]] = {}
        self.closed = False

    def send(self, message: dict[str, Any]) -> None:
        if self.closed:
            return
        with self._lock:
            try:
                self._sock.send(message)
            except OSError:
                self.closed = True

    def push(self, kind: str, **fields: Any) -> None:
        self.send({"t": "push", "k": kind, **fields})

    def send_outputs(self, items: list[dict[str, Any]]) -> None:
        """Outputs leave as soon as they exist: a finished result is never held back behind
        the next input (which might crash), so a crash can be blamed on the right input."""
        self.push("outputs", items=items)

    def request(self, method: str, /, **args: Any) -> Any:
        """Ask the server something and wait for the answer (the reader thread delivers it)."""
        request_id = next(self._ids)
        event = threading.Event()
        slot: list[Any] = []
        self._waiting[request_id] = (event, slot)
        self.send({"t": "req", "id": request_id, "m": method, "a": args})
        if not event.wait(timeout=300):
            raise ConnectionError(f"The server did not answer {method} in 300s.")
        frame = slot[0]
        if not frame.get("ok"):
            raise error_from_wire(frame["e"])
        return frame["r"]

    def notify(self, method: str, /, **args: Any) -> None:
        """Send a request whose answer nobody waits for (it is dropped when it comes): a stream
        of them keeps its order with everything else this uplink sends."""
        self.send({"t": "req", "id": next(self._ids), "m": method, "a": args})

    def deliver_response(self, frame: dict[str, Any]) -> None:
        waiting = self._waiting.pop(frame.get("id", -1), None)
        if waiting is not None:
            waiting[1].append(frame)
            waiting[0].set()

    def recv(self) -> dict[str, Any]:
        return self._sock.recv()

    def close(self) -> None:
        self.closed = True
        self._sock.close()


class LogStream(io.TextIOBase):
    """Replaces sys.stdout/sys.stderr in a container: lines go to the server as log frames."""

    def __init__(self, name: str, send: Callable[[str, str], None]) -> None:
        self._name = name
        self._send = send
        self._buffer: list[str] = []
        self._lock = threading.Lock()

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"<{self._name}>"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            self._buffer.append(text)
            if "\n" in text:
                self._flush_locked()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._buffer:
            text, self._buffer = "".join(self._buffer), []
            self._send(self._name, text)
