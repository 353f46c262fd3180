"""Held pushes on a control-plane connection (`Connection.push_soon`, used for log lines): they
leave in one write with the next frame, or after HOLD_SECONDS, and never change the order."""

from __future__ import annotations

import asyncio

from ferry._protocol import encode
from ferry.server.connection import HOLD_SECONDS, Connection


class Writer:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def connection() -> tuple[Connection, Writer]:
    writer = Writer()
    return Connection(asyncio.StreamReader(), writer), writer  # type: ignore[arg-type]


def log(n: int) -> dict:
    return {"t": "push", "k": "log", "text": f"line {n}\n"}


def test_held_lines_leave_with_the_next_frame_in_one_write():
    async def scenario() -> list[bytes]:
        conn, writer = connection()
        conn.push_soon("log", text="line 0\n")
        conn.push_soon("log", text="line 1\n")
        assert writer.writes == []
        conn.send({"t": "res", "id": 7, "ok": True, "r": 1})
        await asyncio.sleep(HOLD_SECONDS * 3)       # nothing left to release
        return writer.writes

    writes = asyncio.run(scenario())
    assert writes == [encode(log(0)) + encode(log(1)) + encode({"t": "res", "id": 7, "ok": True, "r": 1})]


def test_held_lines_leave_on_their_own_after_a_moment():
    async def scenario() -> tuple[list[bytes], list[bytes]]:
        conn, writer = connection()
        conn.push_soon("log", text="line 0\n")
        await asyncio.sleep(0)
        before = list(writer.writes)
        await asyncio.sleep(HOLD_SECONDS * 5)
        return before, writer.writes

    before, after = asyncio.run(scenario())
    assert before == []
    assert after == [encode(log(0))]


def test_outputs_and_lines_keep_their_order_and_close_sends_what_is_held():
    async def scenario() -> Writer:
        conn, writer = connection()
        conn.push_soon("log", text="line 0\n")
        conn.push_output("ca-1", {"idx": 0, "status": "ok"})
        conn.push_soon("log", text="line 1\n")
        await asyncio.sleep(0)                     # the outputs' flush: after line 0 and line 1
        conn.push_soon("log", text="line 2\n")
        conn.close()
        return writer

    writer = asyncio.run(scenario())
    outputs = encode({"t": "push", "k": "outputs", "call": "ca-1", "items": [{"idx": 0, "status": "ok"}]})
    assert b"".join(writer.writes) == encode(log(0)) + encode(log(1)) + outputs + encode(log(2))
    assert writer.closed


def test_frames_to_a_peer_that_went_away_are_dropped():
    """The peer closed (its transport is closing) before the connection noticed: answers and
    pushes to it are dropped, not written (uvloop raises on such a write)."""
    async def scenario() -> Writer:
        conn, writer = connection()
        conn.send({"t": "res", "id": 1, "ok": True, "r": {}})
        writer.closed = True  # the transport, not the Connection
        conn.send({"t": "res", "id": 2, "ok": True, "r": {}})
        conn.push_soon("log", text="late")
        await asyncio.sleep(0.01)
        return writer

    assert len(asyncio.run(scenario()).writes) == 1
