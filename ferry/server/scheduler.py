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
        self.dispatch(pool)
        self._wake_autoscaler(pool)

    def dispatch(self, pool: Pool) -> None:
        """Hand queued inputs to READY containers, least loaded first, up to their capacity."""
        if not pool.queue:
            return
        capacity = pool.capacity()
        ready = [c for c in pool.containers.values()
                 if c.state is ContainerState.READY and len(c.inflight) < capacity]
        while pool.queue and ready:
            container = min(ready, key=lambda c: len(c.inflight))
            room = capacity - len(container.inflight)
            batch: list[Input] = []
            stamp = now()
            while pool.queue and len(batch) < room:
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
            ready.remove(container)

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
        if status.retryable and entry.attempt < policy.max_retries:
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
