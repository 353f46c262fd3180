"""The default log handler (`_client.print_log`): on the client loop it flushes once per loop
turn, before anything scheduled after the lines (the caller's wakeup), and flushes one stream
before writing to the other, so stdout and stderr keep their order."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Iterator

import pytest

from ferry._client import print_log


class Stream:
    def __init__(self, name: str, events: list[str]) -> None:
        self.name, self.events, self.buffer = name, events, ""

    def write(self, text: str) -> int:
        self.buffer += text
        return len(text)

    def flush(self) -> None:
        if self.buffer:
            self.events.append(f"{self.name}:{self.buffer}")
            self.buffer = ""


@pytest.fixture
def events() -> Iterator[list[str]]:
    """What reaches sys.stdout / sys.stderr, flush by flush."""
    events: list[str] = []
    yield events


@contextlib.contextmanager
def streams(events: list[str]) -> Iterator[None]:
    """Replace sys.stdout / sys.stderr inside the test body (pytest's output capture sets
    them again when the body starts, so a fixture cannot)."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = Stream("out", events), Stream("err", events)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def entry(stream: str, text: str) -> dict:
    return {"stream": stream, "text": text}


def test_lines_of_one_turn_leave_in_one_flush_before_the_result(events):
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        print_log(entry("stdout", "a\n"))
        print_log(entry("stdout", "b\n"))
        loop.call_soon(events.append, "result")       # the caller's wakeup, scheduled after
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    with streams(events):
        asyncio.run(scenario())
    assert events == ["out:a\nb\n", "result"]


def test_streams_keep_their_order(events):
    async def scenario() -> None:
        print_log(entry("stdout", "a\n"))
        print_log(entry("stderr", "oops\n"))
        print_log(entry("stdout", "b\n"))
        await asyncio.sleep(0)

    with streams(events):
        asyncio.run(scenario())
    assert events == ["out:a\n", "err:oops\n", "out:b\n"]


def test_off_the_loop_it_flushes_at_once(events):
    with streams(events):
        print_log(entry("stderr", "now\n"))
    assert events == ["err:now\n"]
