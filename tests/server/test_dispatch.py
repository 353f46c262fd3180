"""How dispatch spreads queued inputs over ready containers (`scheduler.spread`), the
dispatch rule (room, prefetch, reclaim: docs/architecture.md, "Dispatch") on a simulated clock,
and which containers can share a zygote (`zygote.interpreter_key`)."""

from __future__ import annotations

import heapq
import itertools
import queue
from collections import defaultdict, deque
from typing import Any, Callable

import pytest

from ferry._container.runner import _STOP, take_back
from ferry.server import scheduler as scheduler_module
from ferry.server.model import (FAST_STREAK_MIN, PREFETCH_MAX, App, AppState, Call, Container,
                                ContainerState, Pool, PoolStats)
from ferry.server.runtimes.zygote import interpreter_key
from ferry.server.scheduler import CLOSE_WINDOW_AFTER, RECLAIM_AFTER, Scheduler, spread


@pytest.mark.parametrize("loads, limit, count, expected", [
    ([0], 1, 5, [1]),                       # one input at a time
    ([0, 0, 0], 2, 6, [2, 2, 2]),           # target_inputs=2 over three containers
    ([2, 2], 10, 2, [1, 1]),                # a burst above the target, evenly
    ([0, 2], 4, 4, [3, 1]),                 # the least loaded fill up first
    ([0, 5], 10, 4, [4, 0]),
    ([0, 0, 0], 10, 1, [1, 0, 0]),
    ([0, 0], 257, 1000, [257, 257]),        # never above the limit
    ([3, 4], 4, 5, [1, 0]),
    ([], 4, 5, []),
    ([1, 1], 4, 0, [0, 0]),
])
def test_spread_evens_out_loads_up_to_the_limit(loads, limit, count, expected):
    assert spread(loads, limit, count) == expected


def test_spread_never_gives_more_than_asked():
    for count in range(30):
        given = spread([0, 3, 1, 7], 8, count)
        assert sum(given) == min(count, 8 * 4 - 11)
        assert all(load + g <= 8 for load, g in zip([0, 3, 1, 7], given))


def test_spread_keeps_each_container_under_its_own_limit():
    assert spread([1, 0, 0], [1, 3, 3], 10) == [0, 3, 3]  # a stalled container gets nothing
    assert spread([0, 0], [1, 4], 3) == [1, 2]
    assert spread([2, 0], [5, 1], 9) == [3, 1]


# -- the dispatch rule, on a simulated clock -------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class FakeConn:
    """Records what the scheduler pushes to one container, and hands it to `on_push`."""

    def __init__(self) -> None:
        self.pushes: list[tuple[str, dict[str, Any]]] = []
        self.on_push: Callable[[str, dict[str, Any]], None] = lambda kind, fields: None

    def push(self, kind: str, **fields: Any) -> None:
        self.pushes.append((kind, fields))
        self.on_push(kind, fields)

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.pushes]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(scheduler_module, "now", clock)
    return clock


def make_pool(**config: Any) -> tuple[Scheduler, Pool]:
    app = App(id="ap-1", name="test", state=AppState.RUNNING)
    pool = Pool(function_id="fu-1", app=app, tag="f", definition={"config": config})
    sched = Scheduler(wake_autoscaler=lambda pool: None)
    sched.pools[pool.function_id] = pool
    return sched, pool


def add_container(pool: Pool, name: str, state: ContainerState = ContainerState.READY) -> Container:
    container = Container(id=name, pool=pool, state=state, conn=FakeConn())  # type: ignore[arg-type]
    pool.containers[name] = container
    return container


def open_map(sched: Scheduler, pool: Pool, args: list[Any]) -> tuple[Call, dict[int, dict]]:
    delivered: dict[int, dict] = {}
    call = Call(id=f"ca-{len(sched.calls)}", pool=pool, kind="map",
                deliver=lambda entry, item: delivered.__setitem__(entry.idx, item), closed=True)
    sched.open_call(call)
    sched.submit(call, [(i, {"data": a}, None) for i, a in enumerate(args)])
    return call, delivered


def held(container: Container) -> list[Any]:
    return [i.args["data"] for i in container.inflight.values()]


def finish_oldest(sched: Scheduler, container: Container, dur: float) -> None:
    entry = next(iter(container.inflight.values()))
    sched.on_outputs(container, [{"id": entry.id, "status": "ok", "data": b"", "dur": dur}])


def fast_pool_stats(streak: int, mean: float = 1e-5) -> PoolStats:
    stats = PoolStats()
    for _ in range(streak):
        stats.record_exec(mean)
    return stats


def test_no_prefetch_until_the_function_has_proved_uniformly_fast():
    assert PoolStats().prefetch() == 0
    assert fast_pool_stats(1).prefetch() == 0             # one fast output proves nothing
    assert fast_pool_stats(FAST_STREAK_MIN - 1).prefetch() == 0
    assert fast_pool_stats(FAST_STREAK_MIN, mean=1e-6).prefetch() == PREFETCH_MAX
    assert fast_pool_stats(10_000, mean=1e-6).prefetch() == PREFETCH_MAX
    assert fast_pool_stats(10_000, mean=0.0005).prefetch() == 4   # about 2 ms of work
    assert fast_pool_stats(10_000, mean=0.003).prefetch() == 0    # 3 ms inputs: none
    stats = fast_pool_stats(10_000)
    stats.record_exec(1.0)                                 # one slow output resets it
    assert stats.prefetch() == 0


def test_a_fast_first_input_does_not_let_the_first_container_take_the_rest(clock):
    """The uneven map: the first container ready returns a 0 s input at once; it must not
    be handed the 1..9 s inputs while the other three are starting."""
    sched, pool = make_pool(max_containers=4)
    first = add_container(pool, "a")
    others = [add_container(pool, name, ContainerState.STARTING) for name in "bcd"]
    open_map(sched, pool, list(range(10)))
    assert held(first) == [0]
    clock.t = 0.001
    finish_oldest(sched, first, 0.0)
    assert held(first) == [1]
    for container in others:
        container.state = ContainerState.READY
        sched.dispatch(pool)
    assert [held(c) for c in others] == [[2], [3], [4]]
    assert len(pool.queue) == 5


def test_a_proven_window_stays_open_while_another_container_starts(clock):
    """Inputs proven to take microseconds start soon even in a busy container: holding a
    window of them keeps nothing from a container that is starting."""
    sched, pool = make_pool()
    pool.stats = fast_pool_stats(1000, mean=0.00002)
    window = pool.stats.prefetch()
    assert 90 < window <= 100                                         # about 2 ms of work
    ready = add_container(pool, "a")
    starting = add_container(pool, "b", ContainerState.STARTING)
    open_map(sched, pool, list(range(300)))
    assert len(ready.inflight) == 1 + window
    starting.state = ContainerState.READY
    sched.dispatch(pool)
    assert len(starting.inflight) == 1 + window
    assert len(pool.queue) == 300 - 2 * (1 + window)


def test_prefetch_for_uniformly_fast_inputs_and_the_burst_rule(clock):
    sched, pool = make_pool(max_inputs=10, target_inputs=2)
    pool.stats = fast_pool_stats(1000, mean=0.001)                    # window of 2
    a, b = add_container(pool, "a"), add_container(pool, "b")
    starting = add_container(pool, "c", ContainerState.STARTING)
    open_map(sched, pool, list(range(40)))
    assert len(a.inflight) == len(b.inflight) == 4      # target_inputs + window: c is coming
    starting.state = ContainerState.READY
    sched.dispatch(pool)
    assert [len(c.inflight) for c in (a, b, starting)] == [12, 12, 12]  # burst to 10, plus 2


def test_batched_containers_get_whole_batches(clock):
    sched, pool = make_pool(max_batch_size=4)
    a, b = add_container(pool, "a"), add_container(pool, "b")
    open_map(sched, pool, list(range(8)))
    assert len(a.inflight) == len(b.inflight) == 4
    assert a.waiting() == [] and b.waiting() == []


def test_a_stalled_container_gives_back_its_waiting_inputs_to_an_idle_one(clock):
    sched, pool = make_pool()
    pool.stats = fast_pool_stats(1000, mean=0.0005)                 # window of 4
    a, b = add_container(pool, "a"), add_container(pool, "b")
    open_map(sched, pool, [f"x{i}" for i in range(10)])
    assert len(a.inflight) == 5 and len(b.inflight) == 5
    clock.t = 0.001
    for _ in range(5):
        finish_oldest(sched, b, 0.0005)                               # b is done, a is stuck
    assert not b.inflight
    assert "reclaim" not in a.conn.kinds()                            # a may still be fast
    clock.t = 0.001 + RECLAIM_AFTER * 2
    sched.rebalance(pool)                                             # the autoscaler's tick
    kind, fields = a.conn.pushes[-1]
    assert kind == "reclaim" and fields["ids"] == a.waiting() and len(fields["ids"]) == 4
    sched.rebalance(pool)
    assert a.conn.kinds().count("reclaim") == 1                       # asked once until it answers
    assert pool.stats.prefetch() == 4           # a short stall may be a busy machine
    sched.requeue(a, fields["ids"][1:])                               # it had started one meanwhile
    assert held(a) == ["x0", "x1"]                                    # a stalled one gets nothing
    assert held(b) == ["x2", "x3", "x4"]                              # b is not stalled: a window
    assert not pool.queue


def test_a_long_stall_closes_the_window(clock):
    sched, pool = make_pool()
    pool.stats = fast_pool_stats(1000, mean=0.0005)                 # window of 4
    a, b = add_container(pool, "a"), add_container(pool, "b")
    open_map(sched, pool, [f"x{i}" for i in range(10)])
    for _ in range(5):
        finish_oldest(sched, b, 0.0005)
    clock.t = CLOSE_WINDOW_AFTER * 2
    sched.rebalance(pool)
    assert pool.stats.prefetch() == 0
    sched.requeue(a, a.conn.pushes[-1][1]["ids"])
    assert held(a) == ["x0"] and held(b) == ["x1"]                  # one at a time
    assert [i.args["data"] for i in pool.queue] == ["x2", "x3", "x4"]


def test_no_reclaim_while_the_holder_makes_progress(clock):
    sched, pool = make_pool()
    pool.stats = fast_pool_stats(1000, mean=0.0005)
    a, b = add_container(pool, "a"), add_container(pool, "b")
    open_map(sched, pool, list(range(10)))
    clock.t = RECLAIM_AFTER / 2
    finish_oldest(sched, a, 0.0005)
    for _ in range(5):
        finish_oldest(sched, b, 0.0005)         # b is idle, a holds waiting inputs
    assert "reclaim" not in a.conn.kinds()
    clock.t += RECLAIM_AFTER * 2
    sched.rebalance(pool)                       # until a stalls
    assert a.conn.kinds().count("reclaim") == 1


def test_a_short_stall_keeps_its_inputs_while_every_other_container_is_busy(clock):
    """A container busy on a crowded machine may stall for a moment: with nobody free to
    take its inputs, moving them would only cost messages."""
    sched, pool = make_pool()
    pool.stats = fast_pool_stats(1000, mean=0.0005)
    a, b = add_container(pool, "a"), add_container(pool, "b")
    open_map(sched, pool, list(range(20)))
    clock.t = RECLAIM_AFTER * 2
    finish_oldest(sched, b, 0.0005)                # b is busy with its window, a is stalled
    sched.rebalance(pool)
    assert "reclaim" not in a.conn.kinds()
    assert pool.stats.prefetch() > 0


def test_after_a_long_stall_waiting_inputs_go_back_even_when_all_are_busy(clock):
    """Waiting inputs go back to the queue, so that whichever container frees first takes
    the next one in order; a pool's only container keeps its own."""
    sched, pool = make_pool()
    pool.stats = fast_pool_stats(1000, mean=0.0005)
    lone = add_container(pool, "lone")
    open_map(sched, pool, list(range(5)))
    clock.t = 1.0
    sched.rebalance(pool)
    assert "reclaim" not in lone.conn.kinds()
    other = add_container(pool, "other", ContainerState.STARTING)
    sched.rebalance(pool)
    assert lone.conn.kinds().count("reclaim") == 1
    sched.requeue(lone, lone.waiting())
    assert held(lone) == [0] and list(i.args["data"] for i in pool.queue) == [1, 2, 3, 4]
    other.state = ContainerState.READY
    sched.dispatch(pool)
    assert held(other) == [1]                   # one at a time: the long stall closed the window
    clock.t = 1.01
    finish_oldest(sched, lone, 2.0)
    assert held(lone) == [2]


def test_web_inputs_are_never_reclaimed(clock):
    sched, pool = make_pool()
    pool.definition["web"] = {"kind": "asgi"}
    pool.stats = fast_pool_stats(1000, mean=0.0005)
    a, b = add_container(pool, "a"), add_container(pool, "b")
    open_map(sched, pool, list(range(10)))
    for _ in range(5):
        finish_oldest(sched, b, 0.0005)
    clock.t = 1.0
    sched.rebalance(pool)
    assert "reclaim" not in a.conn.kinds()


class Simulation:
    """Containers that run one input at a time in the order received, on a simulated clock,
    speaking to a real Scheduler; the autoscaler's tick calls `rebalance` every 100 ms."""

    LATENCY = 0.0002

    def __init__(self, clock: Clock, pool: Pool, sched: Scheduler) -> None:
        self.clock, self.pool, self.sched = clock, pool, sched
        self.events: list[tuple[float, int, Callable[[], None]]] = []
        self.seq = itertools.count()
        self.local: dict[str, deque] = defaultdict(deque)
        self.busy: dict[str, bool] = defaultdict(bool)
        self.ran_on: dict[Any, str] = {}
        self.most_held: dict[str, int] = defaultdict(int)

    def at(self, t: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self.events, (t, next(self.seq), fn))

    def add(self, name: str, ready_at: float) -> None:
        container = add_container(self.pool, name, ContainerState.STARTING)
        container.conn.on_push = lambda kind, fields: self.at(  # type: ignore[union-attr]
            self.clock.t + self.LATENCY, lambda: self.receive(container, kind, fields))

        def ready() -> None:
            container.state = ContainerState.READY
            self.sched.dispatch(self.pool)
        self.at(ready_at, ready)

    def receive(self, container: Container, kind: str, fields: dict[str, Any]) -> None:
        waiting = self.local[container.id]
        if kind == "inputs":
            waiting.extend(fields["items"])
            self.most_held[container.id] = max(self.most_held[container.id], len(container.inflight))
        elif kind == "reclaim":
            ids = [i["id"] for i in waiting if i["id"] in set(fields["ids"])]
            self.local[container.id] = deque(i for i in waiting if i["id"] not in ids)
            self.at(self.clock.t + self.LATENCY, lambda: self.sched.requeue(container, ids))
        self.run_next(container)

    def run_next(self, container: Container) -> None:
        if self.busy[container.id] or not self.local[container.id]:
            return
        item = self.local[container.id].popleft()
        self.busy[container.id] = True
        seconds = item["args"]["data"]
        self.ran_on[seconds] = container.id

        def done() -> None:
            self.busy[container.id] = False
            self.at(self.clock.t + self.LATENCY, lambda: self.sched.on_outputs(
                container, [{"id": item["id"], "status": "ok", "data": b"", "dur": seconds}]))
            self.run_next(container)
        self.at(self.clock.t + seconds, done)

    def run(self, call: Call) -> float:
        next_tick = 0.1
        while not call.finished:
            t, _, fn = heapq.heappop(self.events)
            while next_tick <= t:
                self.clock.t = next_tick
                self.sched.rebalance(self.pool)
                next_tick += 0.1
            self.clock.t = t
            fn()
        return self.clock.t


def uneven_run(clock: Clock, seconds: list[float], ready_at: list[float]) -> Simulation:
    sched, pool = make_pool(max_containers=len(ready_at))
    sim = Simulation(clock, pool, sched)
    for n, t in enumerate(ready_at):
        sim.add(f"c{n}", t)
    call, _ = open_map(sched, pool, seconds)
    sim.makespan = sim.run(call)  # type: ignore[attr-defined]
    return sim


@pytest.mark.parametrize("ready_at", [[0.0] * 4, [0.0, 0.3, 0.3, 0.3], [0.0, 0.05, 0.1, 0.5]])
def test_uneven_map_runs_in_order_on_the_first_free_container(clock, ready_at):
    """10 inputs of 0..9 s on 4 containers: the best schedule takes 12 s; running them in
    order, each on the first free container, takes 15 s (what dispatch can do without knowing
    the durations), i.e. within 1.3x."""
    sim = uneven_run(clock, list(range(10)), ready_at)
    assert sim.makespan <= 15 + max(ready_at) + 0.1
    assert sim.makespan <= 1.3 * 12 + max(ready_at)
    assert len({sim.ran_on[s] for s in (6, 7, 8, 9)}) == 4
    assert max(sim.most_held.values()) == 1    # never an input waiting in a busy container


@pytest.mark.parametrize("slow, in_order", [(list(range(10)), 15), (list(range(9, -1, -1)), 12)])
def test_slow_inputs_after_fast_ones_are_taken_back_from_prefetch_windows(clock, slow, in_order):
    """64 fast inputs open the prefetch window; the slow ones behind them land in windows,
    and are taken back when their holders stall: they then run in order, each on the first
    free container (15 s for 0..9 s, 12 s for 9..0 s), give or take the time to notice."""
    sim = uneven_run(clock, [0.0005] * 64 + slow, [0.0] * 4)
    assert max(sim.most_held.values()) > 1     # the window did open
    assert len({sim.ran_on[s] for s in (6, 7, 8, 9)}) == 4
    assert sim.makespan <= in_order + CLOSE_WINDOW_AFTER + 0.1 + 0.05


def test_inputs_given_back_keep_their_place_in_line(clock):
    sched, pool = make_pool()
    pool.stats = fast_pool_stats(1000, mean=0.0005)
    a, b = add_container(pool, "a"), add_container(pool, "b")
    open_map(sched, pool, list(range(14)))
    assert held(a) == [0, 1, 2, 3, 4] and held(b) == [5, 6, 7, 8, 9]
    clock.t = 1.0                               # both stalled: what they give back stays queued
    b_waiting, a_waiting = b.waiting(), a.waiting()
    sched.requeue(b, b_waiting)
    sched.requeue(a, a_waiting)
    assert [i.args["data"] for i in pool.queue] == [1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13]


def test_take_back_removes_only_inputs_not_yet_started():
    inputs: queue.Queue = queue.Queue()
    for n in (3, 4, 5):
        inputs.put({"id": n})
    inputs.put(_STOP)
    assert take_back(inputs, [2, 4, 5]) == [4, 5]    # 2 already started: not there
    assert [inputs.get_nowait() for _ in range(2)] == [{"id": 3}, _STOP]
    assert take_back(inputs, [3]) == []


def test_interpreter_key_holds_only_what_an_interpreter_reads_at_start():
    base = {"PATH": "/bin", "PYTHONPATH": "/src", "LANG": "C.UTF-8", "SECRET_TOKEN": "x",
            "FERRY_CONTAINER_ID": "ct-1"}
    key = interpreter_key("/usr/bin/python3", base)
    assert key == ("/usr/bin/python3", (("LANG", "C.UTF-8"), ("PYTHONPATH", "/src")))
    other = dict(base, SECRET_TOKEN="y", FERRY_CONTAINER_ID="ct-2")
    assert interpreter_key("/usr/bin/python3", other) == key       # same zygote
    assert interpreter_key("/usr/bin/python3", dict(base, PYTHONPATH="/other")) != key
    assert interpreter_key("/venv/bin/python", base) != key
