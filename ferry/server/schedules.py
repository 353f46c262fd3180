"""Schedules: run the functions of deployed apps declared with `schedule=Period(...)` or
`schedule=Cron(...)`.

A control loop (`ScheduleRunner.run`) wakes at the next due run or every `TICK_SECONDS`,
whichever comes first, and calls `tick(now)`. Each step of a tick, per scheduled function:
1. skip it until its `next_run` (UTC) is due;
2. advance `next_run` to the first slot strictly after now and write it to SQLite, BEFORE the
   run starts: a run is started at most once per slot, even if the server dies right after;
3. start one run: an input with no arguments on the function's pool (like `.spawn()`).

Policies (documented in docs/architecture.md, "Schedules"):
- Missed slots collapse: after downtime, or a tick that came late, a due schedule starts ONE
  run however many slots passed, then continues at the next slot after now.
- `Cron` keeps its stored `next_run` across redeploys while its spec is unchanged; `Period`
  restarts on every deploy (next run = deploy time + period) and is anchored to that time, so
  runs do not drift. A server restart resumes both from the stored state.
- A run that was in progress (or still queued) when the server stopped is not restarted.
- Runs may overlap when a run takes longer than the interval; each is an ordinary input of the
  function, so `retries`, `timeout` and `max_containers` apply to it.
- Only deployed apps schedule; ephemeral (`ferry run`) apps never do.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

from .._schedule import Cron, Schedule
from .._serialization import serialize_args
from .model import App, AppState, Call, Input, OutputStatus, Pool

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger("ferry.server")

TICK_SECONDS = 0.5
RUNNING = "running"  # `last_status` while the latest run has not finished
INTERRUPTED = "interrupted"  # `last_status` of a run the server stopped during (not restarted)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _ts(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def _moment(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc)


def first_slot_after(schedule: Schedule, slot: datetime, now: datetime) -> datetime:
    """The first slot of `schedule` strictly after `now`, counting from the due `slot`.

    Cron slots are wall-clock minutes; Period slots are `slot + k * period` (anchored to the
    deploy), skipped arithmetically so a long downtime with a short period is cheap."""
    if isinstance(schedule, Cron):
        return schedule.next_after(now)
    spec = schedule.to_dict()
    if not spec.get("months") and not spec.get("years"):  # a fixed duration
        step = schedule.next_after(slot) - slot
        if now >= slot:
            slot += step * ((now - slot) // step)
    while slot <= now:
        slot = schedule.next_after(slot)
    return slot


@dataclass
class ScheduleState:
    """The durable state of one scheduled function (a row of the `schedules` table)."""

    function_id: str
    app_id: str
    spec: dict[str, Any]          # Schedule.to_dict()
    schedule: Schedule
    next_run: datetime            # UTC
    last_run: datetime | None = None
    last_status: str | None = None  # "running", then the run's output status ("ok", "error", ...)
    last_call: str | None = None    # the latest run's call id (in memory only)


class ScheduleRunner:
    """Keeps every scheduled function's next run and starts runs when they are due."""

    def __init__(self, server: "Server", clock: Callable[[], datetime] = utcnow) -> None:
        self.server = server
        self.clock = clock
        self.states: dict[str, ScheduleState] = {}
        for row in server.store.schedules():
            try:
                schedule = Schedule.from_dict(row["schedule"])
            except Exception as error:  # noqa: BLE001 - a bad row must not stop the server
                log.warning("dropping unreadable schedule of %s: %s", row["function_id"], error)
                server.store.delete_schedule(row["function_id"])
                continue
            self.states[row["function_id"]] = state = ScheduleState(
                function_id=row["function_id"], app_id=row["app_id"], spec=row["schedule"],
                schedule=schedule, next_run=_moment(row["next_run"]),  # type: ignore[arg-type]
                last_run=_moment(row["last_run"]), last_status=row["last_status"],
            )
            if state.last_status == RUNNING:  # the server stopped during that run
                state.last_status = INTERRUPTED
                self._save(state)
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopped = False

    # -- deploys ---------------------------------------------------------------------------
    def on_install(self, app: App, function_id: str, definition: dict[str, Any], *,
                   redeploy: bool) -> None:
        """A function of a deployed app was installed: by a deploy (`redeploy=True`) or by the
        server restoring its state (`redeploy=False`: the stored state is kept as it is)."""
        spec = definition.get("config", {}).get("schedule")
        if spec is None:
            self.forget(function_id)
            return
        current = self.states.get(function_id)
        schedule = Schedule.from_dict(spec)
        keep = current is not None and current.spec == spec and (
            not redeploy or isinstance(schedule, Cron))
        if keep:
            return
        next_run = schedule.next_after(self.clock())
        if current is None:
            self.states[function_id] = current = ScheduleState(
                function_id=function_id, app_id=app.id, spec=spec, schedule=schedule,
                next_run=next_run)
        else:  # in place: a run still going reports its outcome to this state
            current.spec, current.schedule, current.next_run = spec, schedule, next_run
        self._save(current)
        self._wake.set()

    def forget(self, function_id: str) -> None:
        if self.states.pop(function_id, None) is not None:
            self.server.store.delete_schedule(function_id)

    def describe(self, function_id: str) -> dict[str, Any] | None:
        """What `app.show` reports: the schedule, next and last run (epoch seconds)."""
        state = self.states.get(function_id)
        if state is None:
            return None
        return {"schedule": repr(state.schedule), "next_run": _ts(state.next_run),
                "last_run": _ts(state.last_run), "last_status": state.last_status}

    # -- the control loop ------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self.run())

    def stop(self) -> None:
        """The server is stopping: start no more runs, and leave runs still going as "running"
        in the store, so that the next server start reports them as interrupted."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()

    async def run(self) -> None:
        """Tick until cancelled; sleep until the earliest due run, at most TICK_SECONDS."""
        while True:
            now = self.clock()
            try:
                self.tick(now)
            except Exception:  # noqa: BLE001 - keep scheduling the other functions
                log.exception("schedule tick failed")
            delay = TICK_SECONDS
            if self.states:
                earliest = min(s.next_run for s in self.states.values())
                delay = min(delay, max(0.0, (earliest - now).total_seconds()))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(delay, 0.005))
            except asyncio.TimeoutError:
                pass

    def tick(self, now: datetime) -> list[str]:
        """Start every due run as of `now` (UTC-aware); return the started call ids."""
        started: list[str] = []
        if self._stopped:
            return started
        for function_id, state in list(self.states.items()):
            pool = self.server.scheduler.pools.get(function_id)
            if pool is None or pool.app.state is not AppState.DEPLOYED:
                self.forget(function_id)  # its app was stopped or the function removed
                continue
            if state.next_run > now:
                continue
            slot = state.next_run
            state.next_run = first_slot_after(state.schedule, slot, now)
            state.last_run, state.last_status = now, RUNNING
            self._save(state)  # durable before the run starts: at most one run per slot
            state.last_call = self._start_run(pool, state, slot)
            started.append(state.last_call)
        return started

    # -- steps -----------------------------------------------------------------------------
    def _start_run(self, pool: Pool, state: ScheduleState, slot: datetime) -> str:
        call_id = "fc-" + secrets.token_hex(8)
        log.info("scheduled run %s of %s (slot %s)", call_id, pool.tag, slot.isoformat())

        def deliver(entry: Input, item: dict[str, Any]) -> None:
            if item["status"] == OutputStatus.ITEM.value:
                return  # a scheduled generator's values go nowhere
            self._finished(pool, state, call_id, item)

        call = Call(id=call_id, pool=pool, kind="spawn", deliver=deliver, closed=True)
        self.server.scheduler.open_call(call)
        self.server.scheduler.submit(call, [(0, {"data": serialize_args((), {})}, None)])
        return call_id

    def _finished(self, pool: Pool, state: ScheduleState, call_id: str, item: dict) -> None:
        if self._stopped or self.states.get(state.function_id) is not state:
            return  # the server is stopping, or the schedule was removed
        if state.last_call == call_id:  # not an earlier run that overlapped the latest one
            state.last_status = item["status"]
            self._save(state)
        if item["status"] != OutputStatus.OK.value:
            exc = item.get("exc") or {}
            detail = exc.get("tb") or exc.get("repr") or item.get("msg") or item["status"]
            self.server.logs.add(pool.app.id, pool.tag, "scheduler", "stderr",
                                 f"Scheduled run {call_id} of {pool.tag} failed "
                                 f"({item['status']}):\n{detail.rstrip()}\n")

    def _save(self, state: ScheduleState) -> None:
        self.server.store.upsert_schedule(
            state.function_id, state.app_id, state.spec, state.next_run.timestamp(),
            _ts(state.last_run), state.last_status)
