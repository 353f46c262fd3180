"""Input queues: inputs go into their function's pool, out to containers, and their outputs
back to whoever is waiting, with retries applied on the way.

The path of one input:
    submit -> pool.queue -> dispatch (to the least-loaded READY container with room)
           -> container runs it -> on_outputs -> retry (back to the queue, after a delay)
                                             or deliver (to the call's caller)
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any, Callable

from .model import Call, Container, ContainerState, Input, OutputStatus, Pool, now

log = logging.getLogger("ferry.server")

NO_MORE_RETRIES = 1 << 30


class Scheduler:
    def __init__(self, wake_autoscaler: Callable[[Pool], None]) -> None:
        self.pools: dict[str, Pool] = {}
        self.calls: dict[str, Call] = {}
        self._input_ids = itertools.count(1)
        self._wake_autoscaler = wake_autoscaler

    # -- calls and inputs -----------------------------------------------------------------
    def open_call(self, call: Call) -> None:
        self.calls[call.id] = call

    def submit(self, call: Call, items: list[tuple[int, dict[str, Any], str | None]]) -> None:
        """Queue inputs `(idx, args, method)` of `call` and get them moving."""
        pool = call.pool
        for idx, args, method in items:
            pool.queue.append(Input(next(self._input_ids), call, idx, args, method))
        call.remaining += len(items)
        # the autoscaler first: containers it starts now make dispatch keep to target_inputs
        self._wake_autoscaler(pool)
        self.dispatch(pool)

    def dispatch(self, pool: Pool) -> None:
        """Hand queued inputs to READY containers, evening out their loads: first up to
        `target_inputs` each (plus the prefetch window); then, unless more containers are
        starting, up to `max_inputs` each (a burst above the target)."""
        if not pool.queue:
            return
        capacity = pool.capacity()
        share = capacity - (pool.running_slots() - pool.target_inputs)
        self._place(pool, share)
        if pool.queue and share < capacity and not any(
                c.state is ContainerState.STARTING for c in pool.containers.values()):
            self._place(pool, capacity)

    def _place(self, pool: Pool, limit: int) -> None:
        ready = [c for c in pool.containers.values()
                 if c.state is ContainerState.READY and len(c.inflight) < limit]
        if not ready:
            return
        counts = spread([len(c.inflight) for c in ready], limit, len(pool.queue))
        stamp = now()
        for container, count in zip(ready, counts):
            batch: list[Input] = []
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

    # -- outputs --------------------------------------------------------------------------
    def on_outputs(self, container: Container, items: list[dict[str, Any]]) -> None:
        pool = container.pool
        for item in items:
            status = OutputStatus(item["status"])
            if status is OutputStatus.ITEM:
                entry = container.inflight.get(item["id"])
                if entry is not None:
                    entry.call.deliver(entry, item)
                continue
            entry = container.inflight.pop(item["id"], None)
            if entry is None:
                continue
            if "dur" in item:
                pool.stats.record_exec(item["dur"])
            self.finish(entry, item)
        if not container.inflight:
            container.idle_since = now()
        self.dispatch(pool)

    def requeue(self, container: Container, ids: list[int]) -> None:
        """Inputs a container received but never started (it is going away): queue them again."""
        for input_id in reversed(ids):
            entry = container.inflight.pop(input_id, None)
            if entry is not None:
                entry.container = None
                container.pool.queue.appendleft(entry)
        self.dispatch(container.pool)

    def finish(self, entry: Input, item: dict[str, Any]) -> None:
        """An attempt ended: retry it if policy allows, else deliver the output."""
        status = OutputStatus(item["status"])
        entry.container = None
        call = entry.call
        if call.cancelled:
            return
        policy = entry.call.pool.retry_policy
        if call.retries and status.retryable and entry.attempt < policy.max_retries:
            entry.attempt += 1
            delay = policy.delay(entry.attempt)
            log.info("retrying input %s of %s in %.1fs (%s)", entry.idx, call.pool.tag, delay, status.value)
            asyncio.get_running_loop().call_later(delay, self._retry, entry)
            return
        call.remaining -= 1
        item = dict(item, idx=entry.idx)
        item.pop("id", None)
        call.deliver(entry, item)
        if call.finished:
            self.calls.pop(call.id, None)

    def _retry(self, entry: Input) -> None:
        if entry.call.cancelled or not entry.call.pool.app.live:
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

    def cancel(self, call: Call) -> list[Container]:
        """Cancel a call: drop its queued inputs; return containers running its inputs."""
        call.cancelled = True
        pool = call.pool
        pool.queue = type(pool.queue)(i for i in pool.queue if i.call is not call)
        running = [c for c in pool.containers.values()
                   if any(i.call is call for i in c.inflight.values())]
        self.calls.pop(call.id, None)
        return running


def spread(loads: list[int], limit: int, count: int) -> list[int]:
    """How many of `count` inputs each container gets (water-filling): the least loaded fill
    up first, loads even out, none goes above `limit`. `spread([0, 2], 4, 4) == [3, 1]`."""
    levels = list(loads)
    while count > 0:
        open_ = [i for i, level in enumerate(levels) if level < limit]
        if not open_:
            break
        low = min(levels[i] for i in open_)
        lowest = [i for i in open_ if levels[i] == low]
        next_level = min([levels[i] for i in open_ if levels[i] > low] + [limit])
        step = min(next_level - low, count // len(lowest))
        if step == 0:  # fewer inputs left than containers at this level: one each
            for i in lowest[:count]:
                levels[i] += 1
            break
        for i in lowest:
            levels[i] += step
        count -= step * len(lowest)
    return [level - load for level, load in zip(levels, loads)]
