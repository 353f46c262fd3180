"""Logs shown by `app.run()` (as `ferry run` shows them): every line a function prints reaches
this terminal before the call's result, in order, stdout and stderr alike; a line printed
before a long computation shows while it runs; `.map()` outputs keep behind their lines."""

from __future__ import annotations

import sys
import threading
import time

import ferry

app = ferry.App("test-log-order")


@app.function()
def talks(n: int) -> int:
    print(f"out {n} a")
    print(f"err {n}", file=sys.stderr)
    print(f"out {n} b")
    return n


@app.function()
def slow_talker() -> str:
    print("started", flush=True)
    time.sleep(2)
    print("finished")
    return "done"


def test_lines_reach_the_terminal_before_the_result_in_order(server, capfd):
    with app.run():
        for n in range(30):
            talks.remote(n)
            print(f"result {n}")
            print(f"result {n}", file=sys.stderr)
    out, err = capfd.readouterr()
    out_lines = [line for line in out.splitlines() if line.startswith(("out ", "result "))]
    err_lines = [line for line in err.splitlines() if line.startswith(("err ", "result "))]
    assert out_lines == [line for n in range(30) for line in (f"out {n} a", f"out {n} b", f"result {n}")]
    assert err_lines == [line for n in range(30) for line in (f"err {n}", f"result {n}")]


def test_map_outputs_follow_their_lines(server, capfd):
    with app.run():
        for n in talks.map(range(20)):
            print(f"result {n}")
    out, _ = capfd.readouterr()
    lines = [line for line in out.splitlines() if line.startswith(("out ", "result "))]
    for n in range(20):
        assert lines.index(f"out {n} a") < lines.index(f"out {n} b") < lines.index(f"result {n}")
    assert len(lines) == 60


def test_a_line_shows_while_the_function_still_runs(server):
    seen: dict[str, float] = {}
    arrived = threading.Event()

    def handler(entry: dict) -> None:
        for line in entry["text"].splitlines():
            seen.setdefault(line, time.monotonic())
        if "started" in seen:
            arrived.set()

    from ferry._sync import run_sync

    run_sync(app._start(show_logs=True, log_handler=handler))
    try:
        call = slow_talker.spawn()
        assert arrived.wait(1.5), "the first line did not arrive while the function ran"
        assert "finished" not in seen
        assert call.get(timeout=30) == "done"
    finally:
        run_sync(app._stop())
