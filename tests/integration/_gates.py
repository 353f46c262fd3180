"""Gates for tests whose inputs must all be running before any finishes: each input marks that
it started (a file in the gate's directory) and waits until the test opens the gate; the test
opens it once as many inputs as it expects have started. How many ran at once, and in which
containers, then does not depend on how fast containers start on a loaded machine. The process
runtime only (the containers share the test's files)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

HOLD_LIMIT = 120  # seconds an input waits at a gate: a guard against a hang only


def hold(marks: str, x: object) -> float:
    """In a container: say that input `x` has started, then wait until the gate in `marks` is
    open; return when it started (epoch seconds)."""
    start = time.time()
    Path(marks, str(x)).touch()
    while not Path(marks, "gate").exists():
        if time.time() - start > HOLD_LIMIT:
            raise TimeoutError("the test never opened the gate")
        time.sleep(0.02)
    return start


async def hold_async(marks: str, x: object) -> float:
    """`hold` for async functions (it does not block their event loop)."""
    start = time.time()
    Path(marks, str(x)).touch()
    while not Path(marks, "gate").exists():
        if time.time() - start > HOLD_LIMIT:
            raise TimeoutError("the test never opened the gate")
        await asyncio.sleep(0.02)
    return start


class Gate:
    """In the test: a directory of start marks (`path`, to pass to the inputs); a thread opens
    the gate once `count` inputs have started. Leaving the block fails if they never did."""

    def __init__(self, directory: Path, count: int) -> None:
        self.path = str(directory)
        self._count = count
        self._thread = threading.Thread(target=self._open_when_started, daemon=True)
        self.failed = ""

    def _open_when_started(self) -> None:
        deadline = time.monotonic() + HOLD_LIMIT
        while len([p for p in Path(self.path).iterdir() if p.name != "gate"]) < self._count:
            if time.monotonic() > deadline:
                self.failed = f"fewer than {self._count} inputs were running at once"
                break
            time.sleep(0.02)
        Path(self.path, "gate").touch()  # (also on failure: the held inputs end)

    def __enter__(self) -> "Gate":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(10)
        assert not self.failed, self.failed
