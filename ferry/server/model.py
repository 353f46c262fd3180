"""The control plane's in-memory objects: apps, function pools, calls, inputs, containers."""

from __future__ import annotations

import asyncio
import enum
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from .metrics import FunctionSeries

if TYPE_CHECKING:
    from .._gpu import GPURequest
    from .connection import Connection
    from .runtimes import ContainerHandle


class AppState(str, enum.Enum):
    RUNNING = "running"      # ephemeral app of a live `ferry run`
    DEPLOYED = "deployed"    # persistent app of `ferry deploy`
    STOPPED = "stopped"


class ContainerState(str, enum.Enum):
    STARTING = "starting"    # process launched, not yet connected and initialised
    READY = "ready"          # @enter done; takes inputs
    DRAINING = "draining"    # asked to stop; finishes what it holds, runs @exit
    STOPPED = "stopped"


class OutputStatus(str, enum.Enum):
    OK = "ok"
    ITEM = "item"            # one value yielded by a generator function
    ERROR = "error"          # the user's code raised
    TIMEOUT = "timeout"      # ran past `timeout`
    CRASH = "crash"          # container died while running the input
    OOM = "oom"              # container exceeded its memory limit
    CANCELLED = "cancelled"
    INIT_ERROR = "init_error"  # container could not import the code or run @enter
    STOPPED = "stopped"      # the app stopped before the input ran

    @property
    def retryable(self) -> bool:
        return self in (OutputStatus.ERROR, OutputStatus.TIMEOUT, OutputStatus.CRASH, OutputStatus.OOM)


@dataclass
class RetryPolicy:
    max_retries: int = 0
    backoff_coefficient: float = 2.0
    initial_delay: float = 1.0
    max_delay: float = 60.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (1-based)."""
        return min(self.initial_delay * self.backoff_coefficient ** (attempt - 1), self.max_delay)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "RetryPolicy":
        return cls(**data) if data else cls()


@dataclass
class App:
    id: str
    name: str
    state: AppState
    owner: "Connection | None" = None   # the client whose disconnect stops an ephemeral app
    objects: dict[str, str] = field(default_factory=dict)  # tag -> function id
    created: float = field(default_factory=time.time)

    @property
    def live(self) -> bool:
        return self.state is not AppState.STOPPED


@dataclass
class Container:
    id: str
    pool: "Pool"
    state: ContainerState = ContainerState.STARTING
    conn: "Connection | None" = None
    handle: "ContainerHandle | None" = None
    inflight: dict[int, "Input"] = field(default_factory=dict)
    launched_at: float = field(default_factory=time.monotonic)
    idle_since: float = field(default_factory=time.monotonic)
    boot_seconds: float | None = None
    enter_seconds: float | None = None
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=40))
    stop_reason: str = ""
    gpu: tuple[str, list[int]] | None = None   # GPU type and host device indices it holds
    progress_at: float = field(default_factory=time.monotonic)  # its last output, or when it got work while empty
    reclaiming: bool = False                   # asked to give back its waiting inputs; no answer yet
    served: int = 0                            # inputs it finished (outputs it returned)
    started: float = field(default_factory=time.time)  # launch, as epoch seconds (what people see)

    @property
    def node(self) -> str | None:
        """The cluster node it runs on (ray runtime: Ray's node id, once placed), else None."""
        return getattr(self.handle, "node_id", None)

    def waiting(self) -> list[int]:
        """Ids of the inputs it holds but has not started (it runs them in the order received,
        at most `running_slots` at once)."""
        slots = self.pool.running_slots()
        return list(self.inflight)[slots:] if len(self.inflight) > slots else []

    @property
    def live(self) -> bool:
        return self.state in (ContainerState.STARTING, ContainerState.READY)


@dataclass(eq=False)
class Call:
    """One `.remote()`, `.map()` or `.spawn()`: a set of inputs whose outputs go one place."""

    id: str
    pool: "Pool"
    kind: str                                   # "remote" | "map" | "spawn" | "web"
    deliver: Callable[["Input", dict], None]    # where finished outputs go
    owner: "Connection | None" = None
    remaining: int = 0                          # inputs submitted and not yet finished
    closed: bool = False                        # no more inputs will be added
    cancelled: bool = False
    retries: bool = True                        # False: failures are never retried (HTTP requests)
    durable: bool = False                       # inputs and outputs go to the journal (server/journal.py)
    attempts_saved: bool = False                # some input's failures are in the journal
    held: dict[int, dict] = field(default_factory=dict)  # outputs kept for a caller not back yet (restart)
    opened: float = field(default_factory=time.time)  # epoch seconds (the dashboard's calls)
    submitted: int = 0                          # inputs submitted so far
    failures: int = 0                           # inputs that finished with an error
    error: str | None = None                    # the first of those errors, in one line

    @property
    def finished(self) -> bool:
        return self.closed and self.remaining == 0


@dataclass(eq=False)
class Input:
    id: int
    call: Call
    idx: int
    args: dict[str, Any]                  # {"data": bytes} or {"blob": sha256}
    method: str | None = None
    attempt: int = 0                      # failures so far (kept across restarts: journal.py)
    yielded: int = 0                      # values a generator has delivered (never run again then)
    attempt_saved: bool = False           # its failures are in the journal (until it finishes)
    container: Container | None = None
    dispatched_at: float = 0.0
    queued_at: float = 0.0                # when it reached the server (the latency metric)

    def wire(self) -> dict[str, Any]:
        return {"id": self.id, "args": self.args, "method": self.method, "call": self.call.id}


# Dispatch's prefetch window (docs/architecture.md, "Dispatch"): a container may hold about
# PREFETCH_HORIZON of work beyond the inputs it runs at once, and only once the pool's last
# FAST_STREAK_MIN (or more) outputs each took less than FAST_OUTPUT (a bound well above a busy
# machine's scheduling hiccups, well below scheduler.RECLAIM_AFTER).
PREFETCH_HORIZON = 0.002
PREFETCH_MAX = 256
FAST_STREAK_MIN = 16
FAST_OUTPUT = 0.01


@dataclass
class PoolStats:
    """Numbers `ferry run --profile` and `ferry app show` report."""

    containers_started: int = 0
    boot_seconds: list[float] = field(default_factory=list)
    enter_seconds: list[float] = field(default_factory=list)
    exec_count: int = 0
    exec_total: float = 0.0
    exec_max: float = 0.0
    exec_ewma: float | None = None
    fast_streak: int = 0          # outputs in a row that each took less than FAST_OUTPUT
    series: FunctionSeries = field(default_factory=FunctionSeries)  # /metrics (server/metrics.py)

    def record_exec(self, seconds: float) -> None:
        self.exec_count += 1
        self.exec_total += seconds
        self.exec_max = max(self.exec_max, seconds)
        self.exec_ewma = seconds if self.exec_ewma is None else 0.8 * self.exec_ewma + 0.2 * seconds
        self.fast_streak = self.fast_streak + 1 if seconds < FAST_OUTPUT else 0
        self.series.execution.observe(seconds)

    def prefetch(self) -> int:
        """Inputs a container may hold beyond those it runs: 0 until the function has proved
        uniformly fast (FAST_STREAK_MIN outputs in a row under FAST_OUTPUT; one slow output
        starts the count again); then about PREFETCH_HORIZON of work at the recent mean."""
        if self.fast_streak < FAST_STREAK_MIN:
            return 0
        mean = max(self.exec_ewma or 0.0, 1e-6)
        return int(min(PREFETCH_MAX, PREFETCH_HORIZON / mean))

    def summary(self) -> dict[str, Any]:
        def mean(values: list[float]) -> float | None:
            return sum(values) / len(values) if values else None

        return {
            "containers_started": self.containers_started,
            "boot_mean": mean(self.boot_seconds),
            "enter_mean": mean(self.enter_seconds),
            "exec_count": self.exec_count,
            "exec_mean": self.exec_total / self.exec_count if self.exec_count else None,
            "exec_max": self.exec_max if self.exec_count else None,
        }


@dataclass(eq=False)
class Pool:
    """The containers and queued inputs of one function (or one parametrised class instance)."""

    function_id: str
    app: App
    tag: str
    definition: dict[str, Any]
    params: bytes | None = None               # bound class parameters, pickled
    queue: deque[Input] = field(default_factory=deque)
    containers: dict[str, Container] = field(default_factory=dict)
    stats: PoolStats = field(default_factory=PoolStats)
    init_failures: int = 0
    next_start_at: float = 0.0                # back-off after containers fail to start
    last_init_error: dict[str, Any] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # update_autoscaler()
    base_id: str | None = None                # the pool this one derives from (instance, variant)
    config_overrides: dict[str, Any] = field(default_factory=dict)  # with_options()

    def derive_definition(self, base_definition: dict[str, Any]) -> dict[str, Any]:
        """This pool's definition: its base's, with its `with_options` overrides applied."""
        if not self.config_overrides:
            return base_definition
        overrides = dict(self.config_overrides)
        image = overrides.pop("image", None)  # with_options(image=...): a built image's wire form
        definition = dict(base_definition, config={**base_definition.get("config", {}), **overrides})
        if image is not None:
            definition["image"] = image
        return definition

    def setting(self, name: str, default: Any = None) -> Any:
        if name in self.overrides:
            return self.overrides[name]
        value = self.definition.get("config", {}).get(name)
        return default if value is None else value

    @property
    def concurrency(self) -> int:
        return int(self.setting("max_inputs", 1))

    @property
    def target_inputs(self) -> int:
        """Inputs the autoscaler aims at per container: `target_inputs`, else all a container
        can run at once (`max_inputs`, or `max_batch_size` for a batched function)."""
        return int(self.setting("target_inputs", None) or self.running_slots())

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy.from_dict(self.setting("retries"))

    def gpu_request(self) -> "GPURequest | None":
        from .._gpu import GPURequest

        data = self.definition.get("config", {}).get("gpu")
        return GPURequest.from_dict(data) if data else None

    def running_slots(self) -> int:
        """Inputs a container runs at the same time (the rest of what it holds waits)."""
        return self.concurrency * max(1, int(self.setting("max_batch_size") or 1))


    def live_containers(self) -> list[Container]:
        return [c for c in self.containers.values() if c.live]

    def load(self) -> int:
        return len(self.queue) + sum(len(c.inflight) for c in self.containers.values())

    def required_containers(self) -> int:
        load = self.load()
        return math.ceil(load / max(1, self.target_inputs)) if load else 0


def now() -> float:
    return time.monotonic()


def new_future() -> asyncio.Future:
    return asyncio.get_running_loop().create_future()
