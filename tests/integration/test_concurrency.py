"""Input concurrency (`@ferry.concurrent`) with real containers: sync functions run up to
`max_inputs` inputs at once on threads of one container, async functions as tasks on one event
loop, never more than `max_inputs` at once; `target_inputs` is what the autoscaler aims at per
container (bounded by `max_containers`); the old `allow_concurrent_inputs=` still works.

Overlap is measured from timestamps the containers record, not from the caller's wall clock.
Inputs are held at a gate (_gates.py) until as many as the test expects have started, so how many
ran at once, and where, does not depend on how fast containers start on a loaded machine."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import warnings

import ferry
from ferry._client import Client

from ._gates import Gate, hold, hold_async

app = ferry.App("test-concurrency")

NAP = 0.5


@app.function(max_containers=1)
@ferry.concurrent(max_inputs=4)
def sync_nap(x: int, marks: str) -> dict:
    start = hold(marks, x)
    time.sleep(NAP)
    return {"x": x, "pid": os.getpid(), "thread": threading.get_ident(), "start": start, "end": time.time()}


@app.function(max_containers=1)
@ferry.concurrent(max_inputs=5)
async def async_nap(x: int, marks: str) -> dict:
    loop = asyncio.get_running_loop()
    start = await hold_async(marks, x)
    await asyncio.sleep(NAP)
    return {"x": x, "pid": os.getpid(), "thread": threading.get_ident(), "loop": id(loop),
            "start": start, "end": time.time()}


@app.function(max_containers=5)
@ferry.concurrent(max_inputs=10, target_inputs=2)
def aims_at_two(x: int, marks: str) -> dict:
    start = hold(marks, x)
    return {"x": x, "pid": os.getpid(), "start": start, "end": time.time()}


@app.function(max_containers=2)
@ferry.concurrent(max_inputs=10, target_inputs=2)
def aims_at_two_capped(x: int, marks: str) -> dict:
    start = hold(marks, x)
    return {"x": x, "pid": os.getpid(), "start": start, "end": time.time()}


def max_overlap(records: list[dict]) -> int:
    """The largest number of inputs that were running at the same instant."""
    events = sorted([(r["start"], 1) for r in records] + [(r["end"], -1) for r in records],
                    key=lambda e: (e[0], e[1]))  # an end before a start at the same instant
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def _per_pid(records: list[dict]) -> dict[int, list[dict]]:
    grouped: dict[int, list[dict]] = {}
    for record in records:
        grouped.setdefault(record["pid"], []).append(record)
    return grouped


def _function_info(server, tag: str) -> dict:
    info = Client.for_url(server.url).request_sync("app.show", app=app.app_id)
    (entry,) = [f for f in info["functions"] if f["tag"] == tag]
    return entry


def test_sync_function_runs_max_inputs_at_once_on_threads(server, tmp_path):
    with app.run(show_logs=False), Gate(tmp_path, 4) as gate:
        records = list(sync_nap.map(range(10), kwargs={"marks": gate.path}))
    assert [r["x"] for r in records] == list(range(10))
    assert len({r["pid"] for r in records}) == 1, records  # one container
    assert max_overlap(records) == 4, records               # max_inputs at once, never more
    assert len({r["thread"] for r in records}) > 1          # on several threads


def test_async_function_runs_as_tasks_on_one_event_loop(server, tmp_path):
    with app.run(show_logs=False), Gate(tmp_path, 5) as gate:
        records = list(async_nap.map(range(12), kwargs={"marks": gate.path}))
    assert [r["x"] for r in records] == list(range(12))
    assert len({r["pid"] for r in records}) == 1, records
    assert len({r["thread"] for r in records}) == 1, records  # one thread...
    assert len({r["loop"] for r in records}) == 1, records    # ...running one event loop
    assert max_overlap(records) == 5, records


def test_target_inputs_sets_containers_the_autoscaler_aims_at(server, tmp_path):
    """max_inputs=10, target_inputs=2: six inputs held until all have started get three
    containers, two each."""
    with app.run(show_logs=False):
        with Gate(tmp_path, 6) as gate:
            records = list(aims_at_two.map(range(6), kwargs={"marks": gate.path}))
        stats = _function_info(server, "aims_at_two")["stats"]
    grouped = _per_pid(records)
    assert stats["containers_started"] == 3, stats
    assert sorted(len(v) for v in grouped.values()) == [2, 2, 2], grouped
    for members in grouped.values():
        assert max_overlap(members) == 2, members


def test_target_inputs_bursts_towards_max_inputs_at_max_containers(server, tmp_path):
    """With max_containers=2 the six inputs cannot be spread two per container: the two
    containers take three each (up to max_inputs), and no third container starts."""
    with app.run(show_logs=False):
        with Gate(tmp_path, 6) as gate:
            records = list(aims_at_two_capped.map(range(6), kwargs={"marks": gate.path}))
        stats = _function_info(server, "aims_at_two_capped")["stats"]
    grouped = _per_pid(records)
    assert stats["containers_started"] == 2, stats
    assert sorted(len(v) for v in grouped.values()) == [3, 3], grouped
    assert max_overlap(records) == 6, records  # all six ran at once


def test_allow_concurrent_inputs_still_works_and_warns(server, tmp_path):
    legacy_app = ferry.App("test-concurrency-legacy")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decorator = legacy_app.function(allow_concurrent_inputs=3, max_containers=1)
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(deprecations) == 1, [str(w.message) for w in caught]
    assert deprecations[0].filename == __file__  # points at the user's line
    assert "ferry.concurrent" in str(deprecations[0].message)

    def legacy_nap(x: int, marks: str) -> dict:
        start = hold(marks, x)
        time.sleep(NAP)
        return {"x": x, "pid": os.getpid(), "start": start, "end": time.time()}

    fn = decorator(legacy_nap)
    with legacy_app.run(show_logs=False), Gate(tmp_path, 3) as gate:
        records = list(fn.map(range(6), kwargs={"marks": gate.path}))
    assert len({r["pid"] for r in records}) == 1, records
    assert max_overlap(records) == 3, records
