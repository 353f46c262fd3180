"""Prometheus metrics of the control plane, served by the web gateway at `/metrics`
(gateway/scrape.py decides who may read them; docs/observability.md lists every metric).

Two kinds of numbers:

    counted     on the hot path, where the scheduler already records its stats: one
                FunctionSeries per (app name, function name), reached through the pool's
                PoolStats, so an input costs an increment and a histogram bucket index
                (`Histogram.observe`: one bisect over fixed buckets), nothing more
    looked at   when a scrape comes: queued and running inputs, containers by state, apps,
                volume bytes, the server process (from /proc); nothing kept for them

A FunctionSeries lives as long as the server, so its counters never go backwards when an
app stops and a new run of the same app starts (Prometheus sees one series per app name and
function name, as dashboards expect).
"""

from __future__ import annotations

import os
import resource
from bisect import bisect_left
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from .model import App, Pool

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# fixed buckets (seconds): an input's latency spans a warm call (~1 ms) to long jobs
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0, 300.0)
COLD_START_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BUILD_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class Histogram:
    """Counts of observations per fixed bucket (`le` upper bounds, +Inf last) and their sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value


class FunctionSeries:
    """The counters of one function: inputs done and failed, retries, latencies, cold starts."""

    __slots__ = ("done", "failed", "retries", "latency", "execution", "cold_start", "enter")

    def __init__(self) -> None:
        self.done = 0
        self.failed: dict[str, int] = {}   # final status (error, timeout, crash, ...) -> inputs
        self.retries = 0
        self.latency = Histogram(LATENCY_BUCKETS)      # queued -> final output, seen by the server
        self.execution = Histogram(LATENCY_BUCKETS)    # the function body, timed in the container
        self.cold_start = Histogram(COLD_START_BUCKETS)  # container launched -> ready (incl. @enter)
        self.enter = Histogram(COLD_START_BUCKETS)     # @enter alone

    def finished(self, status: str, seconds: float) -> None:
        """An input's final output (after retries) was delivered."""
        if status == "ok":
            self.done += 1
        else:
            self.failed[status] = self.failed.get(status, 0) + 1
        latency = self.latency  # (Histogram.observe, inlined: this runs for every input)
        latency.counts[bisect_left(latency.bounds, seconds)] += 1
        latency.total += seconds


class Metrics:
    """Every function's series, by (app name, function name), and the image builds."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, str], FunctionSeries] = {}
        self.image_builds = Histogram(BUILD_BUCKETS)   # builds that built at least one step
        self.image_build_failures = 0

    def series(self, app: str, function: str) -> FunctionSeries:
        found = self._series.get((app, function))
        if found is None:
            found = self._series[(app, function)] = FunctionSeries()
        return found

    def all_series(self) -> dict[tuple[str, str], FunctionSeries]:
        return dict(self._series)


class Exposition:
    """Prometheus text format, one metric family at a time (HELP, TYPE, samples)."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, labels: dict[str, str], value: float) -> None:
        self._lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def histogram(self, name: str, labels: dict[str, str], hist: Histogram) -> None:
        running = 0
        for bound, count in zip(hist.bounds, hist.counts):
            running += count
            self.sample(name + "_bucket", {**labels, "le": _number(bound)}, running)
        running += hist.counts[-1]
        self.sample(name + "_bucket", {**labels, "le": "+Inf"}, running)
        self.sample(name + "_sum", labels, hist.total)
        self.sample(name + "_count", labels, running)

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def render(metrics: Metrics, *, pools: Iterable["Pool"], apps: Iterable["App"],
           volumes: list[dict[str, Any]], info: dict[str, str]) -> str:
    """The whole scrape: `info` holds the server's version and runtime."""
    out = Exposition()
    out.family("ferry_server_info", "gauge", "The control plane's version and container runtime (always 1).")
    out.sample("ferry_server_info", info, 1)

    live: dict[tuple[str, str], list["Pool"]] = {}
    for pool in pools:
        if pool.app.live:
            live.setdefault((pool.app.name, pool.tag), []).append(pool)
    out.family("ferry_inputs_queued", "gauge", "Inputs waiting in the function's queue.")
    for (app, function), group in sorted(live.items()):
        out.sample("ferry_inputs_queued", _fn(app, function), sum(len(p.queue) for p in group))
    out.family("ferry_inputs_running", "gauge", "Inputs held by the function's containers (running or prefetched).")
    for (app, function), group in sorted(live.items()):
        out.sample("ferry_inputs_running", _fn(app, function),
                   sum(len(c.inflight) for p in group for c in p.containers.values()))
    out.family("ferry_containers", "gauge", "Containers of the function by state.")
    for (app, function), group in sorted(live.items()):
        states = {"starting": 0, "ready": 0, "draining": 0}
        for pool in group:
            for container in pool.containers.values():
                if container.state.value in states:
                    states[container.state.value] += 1
        for state, count in states.items():
            out.sample("ferry_containers", {**_fn(app, function), "state": state}, count)

    series = sorted(metrics.all_series().items())
    out.family("ferry_inputs_done_total", "counter", "Inputs that returned a result (after any retries).")
    for (app, function), s in series:
        out.sample("ferry_inputs_done_total", _fn(app, function), s.done)
    out.family("ferry_inputs_failed_total", "counter",
               "Inputs that failed for good (after retries), by reason: error, timeout, crash, oom, "
               "init_error, stopped.")
    for (app, function), s in series:
        for reason, count in sorted(s.failed.items()):
            out.sample("ferry_inputs_failed_total", {**_fn(app, function), "reason": reason}, count)
    out.family("ferry_input_retries_total", "counter", "Failed attempts that were retried.")
    for (app, function), s in series:
        out.sample("ferry_input_retries_total", _fn(app, function), s.retries)
    for name, attr, help_text in (
        ("ferry_input_latency_seconds", "latency", "From an input's arrival at the control plane to its final output."),
        ("ferry_input_execution_seconds", "execution", "Time the function body ran, measured in the container."),
        ("ferry_container_cold_start_seconds", "cold_start",
         "From a container's launch to its first readiness for inputs (imports and @enter included)."),
        ("ferry_container_enter_seconds", "enter", "Time @enter ran in a starting container."),
    ):
        out.family(name, "histogram", help_text)
        for (app, function), s in series:
            out.histogram(name, _fn(app, function), getattr(s, attr))

    out.family("ferry_image_build_seconds", "histogram", "Image builds that built at least one step, start to end.")
    out.histogram("ferry_image_build_seconds", {}, metrics.image_builds)
    out.family("ferry_image_build_failures_total", "counter", "Image builds that failed.")
    out.sample("ferry_image_build_failures_total", {}, metrics.image_build_failures)

    out.family("ferry_apps", "gauge", "Apps known to the control plane by state.")
    by_state = {"running": 0, "deployed": 0, "stopped": 0}
    for app_ in apps:
        by_state[app_.state.value] = by_state.get(app_.state.value, 0) + 1
    for state, count in by_state.items():
        out.sample("ferry_apps", {"state": state}, count)

    out.family("ferry_volume_bytes", "gauge", "Bytes of the volume's files in its latest commit.")
    named = [v for v in volumes if not v.get("ephemeral")]
    for volume in named:
        out.sample("ferry_volume_bytes", {"volume": volume["name"]}, volume["bytes"])
    out.family("ferry_volume_files", "gauge", "Files in the volume's latest commit.")
    for volume in named:
        out.sample("ferry_volume_files", {"volume": volume["name"]}, volume["files"])

    _process(out)
    return out.text()


def _process(out: Exposition) -> None:
    """The standard `process_*` metrics of this process, from /proc (Linux); skipped elsewhere."""
    try:
        with open("/proc/self/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        with open("/proc/stat", "rb") as handle:
            boot = next(float(line.split()[1]) for line in handle if line.startswith(b"btime"))
        fds = len(os.listdir("/proc/self/fd"))
    except (OSError, StopIteration, IndexError, ValueError):
        return
    ticks = os.sysconf("SC_CLK_TCK")
    # after the ")": state is field 3 of stat(5), so field N is fields[N - 3]
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    out.family("process_cpu_seconds_total", "counter", "User and system CPU time of the server process.")
    out.sample("process_cpu_seconds_total", {}, cpu)
    out.family("process_resident_memory_bytes", "gauge", "Resident memory of the server process.")
    out.sample("process_resident_memory_bytes", {}, int(fields[21]) * resource.getpagesize())
    out.family("process_virtual_memory_bytes", "gauge", "Virtual memory of the server process.")
    out.sample("process_virtual_memory_bytes", {}, int(fields[20]))
    out.family("process_open_fds", "gauge", "Open file descriptors of the server process.")
    out.sample("process_open_fds", {}, fds)
    out.family("process_max_fds", "gauge", "The server process's limit on open file descriptors.")
    out.sample("process_max_fds", {}, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    out.family("process_start_time_seconds", "gauge", "When the server process started (seconds since the epoch).")
    out.sample("process_start_time_seconds", {}, boot + int(fields[19]) / ticks)


def _fn(app: str, function: str) -> dict[str, str]:
    return {"app": app, "function": function}


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{_escape(str(value))}"' for key, value in labels.items())
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if value == float("inf"):
        return "+Inf"
    return repr(float(value))

