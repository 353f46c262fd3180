"""The workload the dashboard's browser tests show (tests/integration/test_dashboard_browser.py):
a function that logs lines, one that fails, one that is mapped, one that waits for a flag file."""

from __future__ import annotations

import time
from pathlib import Path

import ferry

app = ferry.App("dashboard-browser")


@app.function()
def chatty(text: str) -> str:
    print(f"chatty says {text}", flush=True)
    return text


@app.function()
def fails() -> None:
    raise ValueError("dashboard-boom")


@app.function()
def square(x: int) -> int:
    return x * x


@app.function(timeout=120)
def waits(flag: str) -> str:
    deadline = time.monotonic() + 100
    while not Path(flag).exists() and time.monotonic() < deadline:  # the test's go
        time.sleep(0.02)
    return "done"
