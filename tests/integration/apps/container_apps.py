"""A class whose inputs wait for a flag file, and that says when its @exit runs
(tests/integration/test_containers.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import ferry

app = ferry.App("container-cmds")


@app.cls(timeout=120)
class Worker:
    @ferry.method()
    def work(self, flag: str, value: int) -> int:
        print(f"started {value} in {os.environ.get('FERRY_CONTAINER_ID')}", flush=True)
        deadline = time.monotonic() + 100
        while not Path(flag).exists() and time.monotonic() < deadline:  # wait for the test's go
            time.sleep(0.02)
        return value * 2

    @ferry.method()
    def say(self, text: str) -> str:
        print(text, flush=True)
        return text

    @ferry.exit()
    def leave(self) -> None:
        print(f"exit ran in {os.environ.get('FERRY_CONTAINER_ID')}", flush=True)
