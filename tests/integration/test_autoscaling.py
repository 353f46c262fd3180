"""Autoscaling with real containers: warm reuse, scale-out bounded by `max_containers`,
`min_containers` starting a container with no call, `scaledown_window` stopping an idle one,
and the old spellings `keep_warm` / `concurrency_limit` (DeprecationWarning at the user's line)."""

from __future__ import annotations

import os
import sqlite3
import time
import warnings

import pytest

import ferry
from ferry._client import Client

from ._gates import Gate, hold

app = ferry.App("test-autoscaling")


@app.function()
def pid() -> int:
    return os.getpid()


@app.function(max_containers=3)
def held_pid_three(x: int, marks: str) -> int:
    hold(marks, x)  # the first three are held until all three run (one per container)
    return os.getpid()


@app.function(max_containers=1)
def sleepy_pid_one(x: int) -> int:
    time.sleep(1)
    return os.getpid()


@app.function(scaledown_window=2)
def short_lived_pid() -> dict:
    # when it ended, on the host's clock (the process runtime), and in which container
    return {"pid": os.getpid(), "container": os.environ["FERRY_CONTAINER_ID"], "end": time.time()}


warm_app = ferry.App("test-autoscaling-min")


@warm_app.function(min_containers=1)
def always_warm() -> int:
    return os.getpid()


def legacy_target() -> str:
    """Registered by the deprecation tests below (under a fresh app each)."""
    return "legacy ok"


def _function_info(server, app_obj: ferry.App, tag: str) -> dict:
    info = Client.for_url(server.url).request_sync("app.show", app=app_obj.app_id)
    (entry,) = [f for f in info["functions"] if f["tag"] == tag]
    return entry


def _wait_for(condition, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def test_warm_container_is_reused_for_sequential_calls(server):
    with app.run(show_logs=False):
        pids = [pid.remote() for _ in range(5)]
    assert len(set(pids)) == 1, pids


def test_map_scales_out_to_max_containers(server, tmp_path):
    with app.run(show_logs=False):
        with Gate(tmp_path, 3) as gate:
            pids = list(held_pid_three.map(range(6), kwargs={"marks": gate.path}))
        info = _function_info(server, app, "held_pid_three")
    assert len(pids) == 6
    assert len(set(pids)) == 3, pids
    assert info["stats"]["containers_started"] == 3, info  # never more than max_containers


def test_map_with_one_max_container_runs_on_one(server):
    with app.run(show_logs=False):
        pids = list(sleepy_pid_one.map(range(3)))
        info = _function_info(server, app, "sleepy_pid_one")
    assert len(set(pids)) == 1, pids
    assert info["stats"]["containers_started"] == 1, info


def test_min_containers_starts_a_container_without_calls(server):
    with warm_app.run(show_logs=False):
        ready = _wait_for(
            lambda: [c for c in _function_info(server, warm_app, "always_warm")["containers"] if c["state"] == "ready"],
            "a ready container for min_containers=1",
        )
        info = _function_info(server, warm_app, "always_warm")
        assert info["stats"]["exec_count"] == 0, info  # nothing was called
        assert len(ready) == 1, info
        always_warm.remote()
        info = _function_info(server, warm_app, "always_warm")
        assert info["stats"]["containers_started"] == 1, info  # the call used the warm container


def test_scaledown_window_stops_idle_container(server):
    with app.run(show_logs=False):
        first = short_lived_pid.remote()
        _wait_for(lambda: not _function_info(server, app, "short_lived_pid")["containers"],
                  "the idle container to stop", timeout=60)
        second = short_lived_pid.remote()
    assert second["pid"] != first["pid"]
    # kept for the 2 s window, not stopped right away: the server recorded its stop no sooner
    # than 2 s after its input ended
    (stopped, reason), = _stops(server, first["container"])
    assert reason == "scaled down" and stopped - first["end"] >= 2, (stopped, reason, first)


def _stops(server, container_id: str) -> list[tuple[float, str]]:
    """When and why the server recorded the container's end (state.db)."""
    db = sqlite3.connect(f"file:{server.home / 'state.db'}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute("SELECT stopped, reason FROM containers WHERE id=?", (container_id,)).fetchall()
    finally:
        db.close()


@pytest.mark.parametrize("old, new, value, setting", [
    ("keep_warm", "min_containers", 1, "min_containers"),
    ("concurrency_limit", "max_containers", 2, "max_containers"),
])
def test_old_spelling_is_accepted_with_deprecation_warning(server, old, new, value, setting):
    legacy_app = ferry.App(f"test-autoscaling-{old.replace('_', '-')}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decorator = legacy_app.function(**{old: value})
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(deprecations) == 1, [str(w.message) for w in caught]
    warning = deprecations[0]
    assert warning.filename == __file__
    assert new in str(warning.message) and old in str(warning.message)

    fn = decorator(legacy_target)
    with legacy_app.run(show_logs=False):
        assert fn.remote() == "legacy ok"
        config = _function_info(server, legacy_app, "legacy_target")["config"]
    assert config[setting] == value
    assert old not in config
