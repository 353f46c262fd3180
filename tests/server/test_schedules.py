"""The schedule runner with a controllable clock, against an in-process server that starts real
container processes: when runs start, how missed slots collapse, what redeploys and restarts
keep, what `app.show` reports. Each test runs its own server (own FERRY_HOME) on its own loop.

The runner's control loop runs too, on the same fake clock: time only moves when a test moves
it, and `tick(now)` right after moving it (no await in between) is the step under test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest

import ferry
from ferry.exception import InvalidError
from ferry.server.schedules import INTERRUPTED, RUNNING, first_slot_after
from ferry.server.server import Server

OUT_ENV = "FERRY_TEST_SCHEDULE_DIR"
T0 = datetime(2025, 3, 3, 6, 0, tzinfo=timezone.utc)  # a Monday; Paris is UTC+1 then

app = ferry.App("test-schedules-unit")


def _mark(name: str) -> None:
    """Record one run as a file: the test counts files to count runs."""
    out = Path(os.environ[OUT_ENV])
    (out / f"{name}-{uuid.uuid4().hex}").write_text("ran")


@app.function(schedule=ferry.Period(minutes=10))
def every_ten_minutes() -> None:
    _mark("every_ten_minutes")


@app.function(schedule=ferry.Cron("0 8 * * 1", timezone="Europe/Paris"))
def monday_report() -> None:
    _mark("monday_report")


@app.function(schedule=ferry.Period(hours=1))
def failing_job() -> None:
    raise RuntimeError("scheduled boom")


@app.function()
def plain(x: int = 1) -> int:
    return x


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def out_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    out = tmp_path / "runs"
    out.mkdir()
    monkeypatch.setenv(OUT_ENV, str(out))  # containers inherit the server's environment
    return out


def _runs(out: Path, name: str) -> int:
    return len(list(out.glob(f"{name}-*")))


async def _until(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def _server(home: Path, clock: FakeClock) -> AsyncIterator[Server]:
    home.mkdir(parents=True, exist_ok=True)
    server = Server(home, "127.0.0.1", 0, "process")
    server.schedules.clock = clock
    await server.start()
    try:
        yield server
    finally:
        await server.shutdown()
        # a container still being launched at shutdown ends by itself (it cannot connect);
        # wait for it so no process outlives this loop
        launching = set(server.containers._tasks)
        if launching:
            await asyncio.wait(launching, timeout=20)


async def _deploy(server: Server, tags: list[str], *, change: dict[str, Any] | None = None) -> dict[str, str]:
    """Deploy the functions `tags` of this module's app, as `ferry deploy` does; `change` maps
    a tag to a different schedule dict. Returns tag -> function id."""
    specs, mount = app._definitions()
    assert mount is not None
    for digest, data in mount.contents.items():
        server.blobs.put(data, digest)
    chosen = [s for s in specs if s["tag"] in tags]
    for spec in chosen:
        if change and spec["tag"] in change:
            spec["definition"]["config"]["schedule"] = change[spec["tag"]]
    result = await server.api.app_create(None, {"name": app.name, "kind": "deployed", "functions": chosen})
    return result["objects"]


def _stored(server: Server, function_id: str) -> dict[str, Any]:
    rows = {row["function_id"]: row for row in server.store.schedules()}
    return rows[function_id]


# -- pure slot arithmetic ------------------------------------------------------------------------
def test_first_slot_after_collapses_missed_period_slots_and_stays_anchored():
    period = ferry.Period(minutes=10)
    assert first_slot_after(period, T0, T0) == T0 + timedelta(minutes=10)
    # a week of downtime: one step to the first slot after now, still on the deploy's grid
    now = T0 + timedelta(days=7, minutes=3, seconds=1)
    assert first_slot_after(period, T0, now) == T0 + timedelta(days=7, minutes=10)
    # a slot exactly at `now` is not "after now"
    assert first_slot_after(period, T0, T0 + timedelta(minutes=20)) == T0 + timedelta(minutes=30)


def test_first_slot_after_with_calendar_months_and_cron():
    monthly = ferry.Period(months=1)
    jan31 = datetime(2025, 1, 31, tzinfo=timezone.utc)
    assert first_slot_after(monthly, jan31, datetime(2025, 3, 1, tzinfo=timezone.utc)) == \
        datetime(2025, 3, 28, tzinfo=timezone.utc)  # Jan 31 -> Feb 28 -> Mar 28 (clamped chain)
    cron = ferry.Cron("*/15 * * * *")
    assert first_slot_after(cron, T0, T0 + timedelta(hours=5, minutes=1)) == T0 + timedelta(hours=5, minutes=15)


# -- the runner against a server -----------------------------------------------------------------
def test_period_runs_once_per_slot_and_missed_slots_collapse_into_one_run(tmp_path, out_dir):
    async def body() -> None:
        clock = FakeClock(T0)
        async with _server(tmp_path / "home", clock) as server:
            runner = server.schedules
            ids = await _deploy(server, ["every_ten_minutes"])
            fid = ids["every_ten_minutes"]
            assert runner.states[fid].next_run == T0 + timedelta(minutes=10)

            assert runner.tick(clock.advance(minutes=5)) == []
            started = runner.tick(clock.advance(minutes=5))  # exactly the slot
            assert len(started) == 1
            # written before the run could even start: the store already has the next slot
            row = _stored(server, fid)
            assert row["next_run"] == (T0 + timedelta(minutes=20)).timestamp()
            assert row["last_status"] == RUNNING
            assert runner.tick(clock.now) == []  # the same slot never starts twice
            await _deploy(server, ["every_ten_minutes"])  # a redeploy while the run is going
            await _until(lambda: _runs(out_dir, "every_ten_minutes") == 1, "the first scheduled run")
            await _until(lambda: runner.states[fid].last_status == "ok", "the run's status")

            # 55 minutes later: slots +20..+60 were missed; exactly one run starts
            now = clock.advance(minutes=55)
            assert len(runner.tick(now)) == 1
            assert runner.tick(now) == []
            assert runner.states[fid].next_run == T0 + timedelta(minutes=70)
            await _until(lambda: _runs(out_dir, "every_ten_minutes") == 2, "the collapsed run")

    asyncio.run(body())


def test_control_loop_starts_due_runs_on_its_own(tmp_path, out_dir):
    async def body() -> None:
        clock = FakeClock(T0)
        async with _server(tmp_path / "home", clock) as server:
            await _deploy(server, ["every_ten_minutes"])
            clock.advance(minutes=10)  # no tick from the test: the loop sees the due slot
            await _until(lambda: _runs(out_dir, "every_ten_minutes") == 1, "a run started by the loop")

    asyncio.run(body())


def test_cron_uses_its_timezone_and_keeps_next_run_across_redeploys_period_resets(tmp_path, out_dir):
    async def body() -> None:
        clock = FakeClock(T0)
        async with _server(tmp_path / "home", clock) as server:
            runner = server.schedules
            ids = await _deploy(server, ["monday_report", "every_ten_minutes"])
            cron_id, period_id = ids["monday_report"], ids["every_ten_minutes"]
            monday_8_paris = datetime(2025, 3, 3, 7, 0, tzinfo=timezone.utc)
            assert runner.states[cron_id].next_run == monday_8_paris
            assert runner.states[period_id].next_run == T0 + timedelta(minutes=10)

            clock.advance(minutes=7)
            assert await _deploy(server, ["monday_report", "every_ten_minutes"]) == ids
            assert runner.states[cron_id].next_run == monday_8_paris  # Cron: kept
            assert runner.states[period_id].next_run == T0 + timedelta(minutes=17)  # Period: reset

            daily_9 = ferry.Cron("0 9 * * *").to_dict()  # a changed cron spec is recomputed
            await _deploy(server, ["monday_report", "every_ten_minutes"], change={"monday_report": daily_9})
            assert runner.states[cron_id].next_run == datetime(2025, 3, 3, 9, 0, tzinfo=timezone.utc)

            # dropping the schedule (or the function) forgets it, in memory and in the store
            await _deploy(server, ["monday_report"], change={"monday_report": None})
            assert runner.states == {}
            assert server.store.schedules() == []

    asyncio.run(body())


def test_restart_resumes_stored_state_runs_a_missed_slot_once_never_a_slot_twice(tmp_path, out_dir):
    async def body() -> None:
        home = tmp_path / "home"
        clock = FakeClock(T0)
        async with _server(home, clock) as server:
            fid = (await _deploy(server, ["every_ten_minutes"]))["every_ten_minutes"]
            assert len(server.schedules.tick(clock.advance(minutes=10))) == 1
            await _until(lambda: server.schedules.states[fid].last_status == "ok", "the first run")

        # back at once: the slot that ran is not run again
        clock.advance(seconds=1)
        async with _server(home, clock) as server:
            assert server.schedules.states[fid].next_run == T0 + timedelta(minutes=20)
            assert server.schedules.tick(clock.now) == []

        # two hours of downtime (12 slots missed): one run, then the next slot after now
        now = clock.advance(hours=2)
        async with _server(home, clock) as server:
            assert len(server.schedules.tick(now)) == 1
            assert server.schedules.tick(now) == []
            assert server.schedules.states[fid].next_run == T0 + timedelta(hours=2, minutes=20)
            await _until(lambda: _runs(out_dir, "every_ten_minutes") == 2, "the run after downtime")

    asyncio.run(body())


def test_a_run_cut_off_by_a_stop_is_marked_interrupted_and_not_restarted(tmp_path, out_dir):
    async def body() -> None:
        home = tmp_path / "home"
        clock = FakeClock(T0)
        async with _server(home, clock) as server:
            fid = (await _deploy(server, ["every_ten_minutes"]))["every_ten_minutes"]
            assert len(server.schedules.tick(clock.advance(minutes=10))) == 1
            # the server stops at once, before the run's container is even up
        async with _server(home, clock) as server:
            state = server.schedules.states[fid]
            assert state.last_status == INTERRUPTED
            assert state.next_run == T0 + timedelta(minutes=20)
            assert server.scheduler.calls == {}  # nothing re-queued for that slot
            assert _stored(server, fid)["last_status"] == INTERRUPTED

    asyncio.run(body())


def test_failed_run_is_logged_with_its_traceback_and_shown_by_app_show(tmp_path, out_dir):
    async def body() -> None:
        clock = FakeClock(T0)
        async with _server(tmp_path / "home", clock) as server:
            ids = await _deploy(server, ["failing_job", "plain"])
            shown = await server.api.app_show(None, {"app": app.name})
            by_tag = {f["tag"]: f for f in shown["functions"]}
            assert by_tag["plain"]["schedule"] is None
            assert by_tag["failing_job"]["schedule"] == {
                "schedule": "Period(hours=1)", "next_run": (T0 + timedelta(hours=1)).timestamp(),
                "last_run": None, "last_status": None}

            fid = ids["failing_job"]
            server.schedules.tick(clock.advance(hours=1))
            await _until(lambda: server.schedules.states[fid].last_status == "error", "the failed run")
            logs = server.store.logs(server.apps[shown["app_id"]].id)
            text = "".join(e["text"] for e in logs if e["container_id"] == "scheduler")
            assert "Scheduled run" in text and "failing_job failed (error)" in text
            assert "RuntimeError: scheduled boom" in text
            shown = await server.api.app_show(None, {"app": app.name})
            info = {f["tag"]: f for f in shown["functions"]}["failing_job"]["schedule"]
            assert info["last_status"] == "error"
            assert info["last_run"] == clock.now.timestamp()
            assert info["next_run"] == (T0 + timedelta(hours=2)).timestamp()

    asyncio.run(body())


def test_stopping_a_deployed_app_forgets_its_schedules(tmp_path, out_dir):
    async def body() -> None:
        clock = FakeClock(T0)
        async with _server(tmp_path / "home", clock) as server:
            await _deploy(server, ["every_ten_minutes"])
            app_row = server.apps[next(iter(server.apps))]
            await server.stop_app(app_row, "test")
            assert server.schedules.tick(clock.advance(minutes=10)) == []
            assert server.schedules.states == {}
            assert server.store.schedules() == []

    asyncio.run(body())


def test_a_bad_schedule_reaching_the_server_fails_the_deploy_and_stores_nothing(tmp_path, out_dir):
    async def body() -> None:
        clock = FakeClock(T0)
        async with _server(tmp_path / "home", clock) as server:
            bad = {"every_ten_minutes": {"type": "period", "seconds": 0}}
            with pytest.raises(InvalidError, match="positive interval"):
                await _deploy(server, ["every_ten_minutes"], change=bad)
            assert server.schedules.states == {}
            assert server.store.schedules() == []

    asyncio.run(body())
