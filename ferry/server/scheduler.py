"""Input queues: inputs go into their function's pool, out to containers, and their outputs
back to whoever is waiting, with retries applied on the way.

The path of one input:
    submit -> pool.queue -> dispatch (to the least-loaded READY container with room)
           -> container runs it -> on_outputs -> retry (back to the queue, after a delay)
                                             or deliver (to the call's caller)

Dispatch never leaves an input waiting in a busy container while another container of the
pool could start it (docs/architecture.md, "Dispatch"):
  1. room     a container holds at most what it runs at once (`target_inputs`, or a burst up
              to `max_inputs` when no container is starting) plus a prefetch window
  2. prefetch the window is 0 unless the pool's last outputs were all fast and no container
              stalled for CLOSE_WINDOW_AFTER since (see PoolStats.prefetch), and the container
              itself is not stalled; then it holds about 2 ms of work, which it starts soon
              even while another container is idle or starting
  3. reclaim  a container that holds waiting inputs and has returned nothing for
              RECLAIM_AFTER is asked to give them back (`reclaim`) while another container
              has room to start one now (or, once the stall lasts CLOSE_WINDOW_AFTER, while
              any other container is live); it answers with `requeue` for those it had not
              started, and they go back to the front of the queue, in order, for whichever
              container frees first
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import deque
from typing import Any, Callable

from .journal import Journal
from .model import Call, Container, ContainerState, Input, OutputStatus, Pool, now

log = logging.getLogger("ferry.server")

NO_MORE_RETRIES = 1 << 30

# a container that holds inputs and returned no output for this long is "stalled": what waits
# in it cannot start soon, so it gets no prefetch, and gives its waiting inputs back when
# another container has room
RECLAIM_AFTER = 0.05
# a stall this long shows that the pool's inputs are not uniformly fast (a shorter one may be
# a busy machine): the pool's prefetch window closes until fast outputs open it again
CLOSE_WINDOW_AFTER = 0.5
# dispatch looks for stalled containers at most this often per pool (it runs once per output
# frame: thousands of times a second in a map of trivial inputs); the autoscaler's tick always
SCAN_EVERY = 0.01
# finished calls kept in memory for the dashboard (newest last)
RECENT_CALLS = 100


def _lost_generator(tag: str, yielded: int) -> dict[str, Any]:
    """The output of a generator input whose container went away after it had yielded."""
    values = "value" if yielded == 1 else "values"
    return {"status": OutputStatus.CRASH.value,
            "msg": f"The container running {tag} went away (its node was lost, or it was stopped) after "
                   f"this generator had yielded {yielded} {values}. A generator is not run again once it "
                   f"has yielded, because its caller would get those values twice; call it again if "
                   f"repeating them is safe."}


class Scheduler:
    def __init__(self, wake_autoscaler: Callable[[Pool], None], journal: Journal | None = None) -> None:
        self.journal = journal  # records the inputs and outputs of durable calls (server/journal.py)
        self.pools: dict[str, Pool] = {}
        self.calls: dict[str, Call] = {}
        self._input_ids = itertools.count(1)
        self._wake_autoscaler = wake_autoscaler
        self._scanned_at: dict[str, float] = {}  # pool (function id) -> its last stall scan
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_CALLS)  # finished calls: describe_call()
        # failures of inputs before the server's restart, (call id, idx) -> count, until their
        # input comes back (from the journal, or sent again by its caller)
        self.restored_attempts: dict[tuple[str, int], int] = {}

    # -- calls and inputs -----------------------------------------------------------------
    def open_call(self, call: Call) -> None:
        self.calls[call.id] = call

    def submit(self, call: Call, items: list[tuple[int, dict[str, Any], str | None]], *,
               journaled: bool = False) -> None:
        """Queue inputs `(idx, args, method)` of `call` and get them moving; those of a durable
        call go to the journal first, unless they come from it (`journaled`). An input that
        failed before a restart of the server keeps its count of failures (`restored_attempts`)."""
        pool = call.pool
        stamp = now()
        if call.durable and not journaled and self.journal is not None:
            self.journal.inputs(call.id, pool.function_id, call.kind, items)
        restored = self.restored_attempts
        for idx, args, method in items:
            entry = Input(next(self._input_ids), call, idx, args, method, queued_at=stamp)
            if restored and (call.id, idx) in restored:
                entry.attempt = restored.pop((call.id, idx))
                entry.attempt_saved = call.attempts_saved = True
            pool.queue.append(entry)
        call.remaining += len(items)
        call.submitted += len(items)
        # the autoscaler first: containers it starts now make dispatch keep to target_inputs
        self._wake_autoscaler(pool)
        self.dispatch(pool)

    def dispatch(self, pool: Pool) -> None:
        """Hand queued inputs to READY containers, evening out their loads: first up to
        `target_inputs` each (plus the prefetch window); then, unless more containers are
        starting, up to `max_inputs` each (a burst above the target). Then take back the
        inputs waiting in stalled containers (at most every SCAN_EVERY)."""
        stamp = now()
        if pool.queue:
            prefetch = pool.stats.prefetch()
            target = pool.target_inputs
            self._place(pool, target, prefetch, stamp)
            if pool.queue:
                slots = pool.running_slots()
                if target < slots and not any(c.state is ContainerState.STARTING
                                              for c in pool.containers.values()):
                    self._place(pool, slots, prefetch, stamp)
        if stamp - self._scanned_at.get(pool.function_id, -SCAN_EVERY) >= SCAN_EVERY:
            self.rebalance(pool)

    def _place(self, pool: Pool, base: int, prefetch: int, stamp: float) -> None:
        ready: list[Container] = []
        limits: list[int] = []
        some_stalled = False
        for container in pool.containers.values():
            if container.state is not ContainerState.READY:
                continue
            held = len(container.inflight)
            limit = base + prefetch
            if prefetch and held and stamp - container.progress_at > RECLAIM_AFTER:  # stalled
                limit, some_stalled = base, True
            if held < limit:
                ready.append(container)
                limits.append(limit)
        if not ready:
            return
        counts = spread([len(c.inflight) for c in ready], limits if some_stalled else base + prefetch,
                        len(pool.queue))
        for container, count in zip(ready, counts):
            if not count:
                continue
            batch: list[Input] = []
            if not container.inflight:
                container.progress_at = stamp
            while pool.queue and len(batch) < count:
                item = pool.queue.popleft()
                if item.call.cancelled:
                    continue
                item.container = container
                item.dispatched_at = stamp
                container.inflight[item.id] = item
                batch.append(item)
            if batch:
                assert container.conn is not None
                container.conn.push("inputs", items=[i.wire() for i in batch])

    def rebalance(self, pool: Pool) -> None:
        """Ask stalled containers to give back the inputs waiting in them, so that they go
        back to the queue, in order, for whichever container can start them first: while a
        READY container has room to start one now, or, after a long stall (CLOSE_WINDOW_AFTER,
        which also closes the pool's prefetch window), while any other container is live.
        Runs on dispatch (at most every SCAN_EVERY) and on every autoscaler tick."""
        if pool.definition.get("web") or pool.definition.get("web_methods"):
            return  # a web request is not taken back once sent
        stamp = self._scanned_at[pool.function_id] = now()
        target = pool.target_inputs
        room = any(c.state is ContainerState.READY and len(c.inflight) < target
                   for c in pool.containers.values())
        for container in pool.containers.values():
            if not stalled(container, stamp):
                continue
            long_stall = stalled(container, stamp, CLOSE_WINDOW_AFTER)
            if long_stall:
                pool.stats.fast_streak = 0
            if container.reclaiming or container.conn is None:
                continue
            if not room and not (long_stall and any(c.live and c is not container
                                                    for c in pool.containers.values())):
                continue
            waiting = container.waiting()
            if waiting:
                container.reclaiming = True
                container.conn.push("reclaim", ids=waiting)

    # -- outputs --------------------------------------------------------------------------
    def on_outputs(self, container: Container, items: list[dict[str, Any]]) -> None:
        pool = container.pool
        for item in items:
            status = OutputStatus(item["status"])
            if status is OutputStatus.ITEM:
                entry = container.inflight.get(item["id"])
                if entry is not None:
                    entry.yielded += 1
                    entry.call.deliver(entry, item)
                continue
            entry = container.inflight.pop(item["id"], None)
            if entry is None:
                continue
            if "dur" in item:
                pool.stats.record_exec(item["dur"])
            container.served += 1
            self.finish(entry, item)
        container.progress_at = now()
        if not container.inflight:
            container.idle_since = container.progress_at
        self.dispatch(pool)

    def requeue(self, container: Container, ids: list[int]) -> None:
        """Inputs a container received but never started (it gave them back, or it is going
        away): queue them again, ahead of the rest."""
        container.reclaiming = False
        back = []
        for input_id in ids:
            entry = container.inflight.pop(input_id, None)
            if entry is None:
                continue
            entry.container = None
            if entry.yielded:  # running it again would repeat the values its caller has
                entry.attempt = NO_MORE_RETRIES
                self.finish(entry, _lost_generator(container.pool.tag, entry.yielded))
            else:
                back.append(entry)
        if back:  # in submission order among the inputs at the front of the queue
            queue = container.pool.queue
            back.sort(key=lambda entry: entry.id)
            front = []
            while queue and queue[0].id < back[-1].id:
                front.append(queue.popleft())
            queue.extendleft(reversed(list(heapq.merge(front, back, key=lambda entry: entry.id))))
        self.dispatch(container.pool)

    def finish(self, entry: Input, item: dict[str, Any]) -> None:
        """An attempt ended: retry it if policy allows, else deliver the output."""
        status = OutputStatus(item["status"])
        entry.container = None
        call = entry.call
        if call.cancelled:
            return
        policy = entry.call.pool.retry_policy
        if call.retries and status.retryable and entry.attempt < policy.max_retries and not entry.yielded:
            entry.attempt += 1
            call.pool.stats.series.retries += 1
            if self.journal is not None:  # a restart keeps the count (docs/reliability.md)
                self.journal.attempt(call.id, entry.idx, entry.attempt)
                entry.attempt_saved = call.attempts_saved = True
            delay = policy.delay(entry.attempt)
            log.info("retrying input %s of %s in %.1fs (%s)", entry.idx, call.pool.tag, delay, status.value)
            asyncio.get_running_loop().call_later(delay, self._retry, entry)
            return
        call.remaining -= 1
        call.pool.stats.series.finished(item["status"], now() - entry.queued_at)
        if status is not OutputStatus.OK:
            call.failures += 1
            if call.error is None:
                call.error = error_line(item)
        item = dict(item, idx=entry.idx)
        item.pop("id", None)
        if entry.attempt_saved and self.journal is not None:
            self.journal.settled(call.id, entry.idx)
        if call.durable and self.journal is not None:
            self.journal.output(call.id, entry.idx, item)
        call.deliver(entry, item)
        if call.finished:
            self._close(call, "failed" if call.failures else "ok")

    def _retry(self, entry: Input) -> None:
        if entry.call.cancelled or not entry.call.pool.app.live:
            if self.journal is not None:
                self.journal.settled(entry.call.id, entry.idx)
            return
        entry.call.pool.queue.appendleft(entry)
        self.dispatch(entry.call.pool)
        self._wake_autoscaler(entry.call.pool)

    def fail_queued(self, pool: Pool, item: dict[str, Any]) -> None:
        """Finish every queued input of `pool` with `item`, without retries (e.g. an init error)."""
        queued, pool.queue = list(pool.queue), type(pool.queue)()
        for entry in queued:
            entry.attempt = NO_MORE_RETRIES
            self.finish(entry, item)

    def fail_inflight(self, container: Container, item: dict[str, Any], *, retry: bool = True) -> None:
        inflight, container.inflight = list(container.inflight.values()), {}
        for entry in inflight:
            if not retry:
                entry.attempt = NO_MORE_RETRIES
            self.finish(entry, item)
        self.dispatch(container.pool)

    def forget(self, call: Call, idxs: set[int]) -> None:
        """Drop the queued inputs `idxs` of `call`: its caller has their outputs already."""
        pool = call.pool
        kept = type(pool.queue)(i for i in pool.queue if i.call is not call or i.idx not in idxs)
        call.remaining -= len(pool.queue) - len(kept)
        pool.queue = kept

    def cancel(self, call: Call) -> list[Container]:
        """Cancel a call: drop its queued inputs; return containers running its inputs."""
        call.cancelled = True
        if (call.durable or call.attempts_saved) and self.journal is not None:
            self.journal.drop(call.id)
        pool = call.pool
        pool.queue = type(pool.queue)(i for i in pool.queue if i.call is not call)
        running = [c for c in pool.containers.values()
                   if any(i.call is call for i in c.inflight.values())]
        self._close(call, "cancelled")
        return running

    def _close(self, call: Call, outcome: str) -> None:
        """A call is over: it leaves the calls in flight for the recent ones."""
        if self.calls.pop(call.id, None) is not None:
            self.recent.append(describe_call(call, outcome=outcome, ended=time.time()))


def describe_call(call: Call, *, outcome: str = "running", ended: float | None = None) -> dict[str, Any]:
    """A call as the dashboard shows it: `{id, app, function, kind, state, inputs, done,
    failures, error, started, ended, duration}` (times in epoch seconds)."""
    return {"id": call.id, "app": call.pool.app.name, "app_id": call.pool.app.id, "function": call.pool.tag,
            "kind": call.kind, "state": outcome, "inputs": call.submitted,
            "done": call.submitted - call.remaining, "failures": call.failures, "error": call.error,
            "started": call.opened, "ended": ended,
            "duration": (ended if ended is not None else time.time()) - call.opened}


def error_line(item: dict[str, Any]) -> str:
    """The first line of an output's error (`ValueError('bad')`, or the platform's message)."""
    exc = item.get("exc")
    text = (exc.get("repr") if isinstance(exc, dict) else None) or item.get("msg") or item.get("status", "error")
    return str(text).split("\n", 1)[0][:300]


def stalled(container: Container, at: float, after: float = RECLAIM_AFTER) -> bool:
    """Whether `container` holds inputs and has returned no output for `after` seconds."""
    return bool(container.inflight) and at - container.progress_at > after


def spread(loads: list[int], limit: int | list[int], count: int) -> list[int]:
    """How many of `count` inputs each container gets (water-filling): the least loaded fill
    up first, loads even out, none goes above its limit (one for all, or one per container).
    `spread([0, 2], 4, 4) == [3, 1]`."""
    limits = limit if isinstance(limit, list) else [limit] * len(loads)
    levels = list(loads)
    while count > 0:
        open_ = [i for i, level in enumerate(levels) if level < limits[i]]
        if not open_:
            break
        low = min(levels[i] for i in open_)
        lowest = [i for i in open_ if levels[i] == low]
        next_level = min([levels[i] for i in open_ if levels[i] > low] + [limits[i] for i in lowest])
        step = min(next_level - low, count // len(lowest))
        if step == 0:  # fewer inputs left than containers at this level: one each
            for i in lowest[:count]:
                levels[i] += 1
            break
        for i in lowest:
            levels[i] += step
        count -= step * len(lowest)
    return [level - load for level, load in zip(levels, loads)]
