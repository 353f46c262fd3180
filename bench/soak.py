"""Soak: a server under a steady mix of work for minutes; does its memory or its open files grow?

    python bench/soak.py [--minutes 5] [--interval 5] [--json PATH]

Starts a throwaway server (process runtime), deploys an app with a trivial function, a web
endpoint and a `Period` schedule, then, until the time is up, repeats a round of work:
`.remote` calls, a `.map`, a `.spawn` collected later, and requests to the web endpoint through
the gateway (the schedule runs on its own meanwhile). A sampler reads the server process's
resident memory (VmRSS in /proc/PID/status) and open file descriptors (/proc/PID/fd) every
`--interval` seconds. One warm-up round runs before the first sample (imports, the first
containers, caches filling). Prints a table of the samples and a verdict: the mean of the last
third of the samples against the first third (memory: growing if it rose by more than 10 % and
8 MiB; open files: growing if the last third's most is above the first third's most by more
than 4), and the memory's trend per 100,000 inputs (least squares over every sample), which a
run longer than a few minutes makes meaningful. Not part of the test suite: it takes minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from server_process import start_server  # noqa: E402

APP = '''
import time

import ferry

app = ferry.App("bench-soak")


@app.function()
def add(x: int) -> int:
    return x + 1


@app.function()
@ferry.fastapi_endpoint()
def echo(n: int = 0) -> dict:
    return {{"n": n}}


@app.function(schedule=ferry.Period(seconds={period}))
def tick() -> None:
    with open({out!r}, "a") as f:
        f.write(f"{{time.time()}}\\n")
'''

MEMORY_GROWTH = (0.10, 8.0)   # a rise of more than 10 % and more than 8 MiB: growing
FD_GROWTH = 4                 # more than 4 more open files at most: growing


@dataclass
class Sample:
    seconds: float    # since the first sample
    rss_mib: float
    fds: int
    rounds: int       # rounds of work done so far
    calls: int        # inputs completed so far (remote, map, spawn)
    requests: int     # web requests answered so far
    ticks: int        # scheduled runs so far


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Work:
    """One round of mixed work, repeated; counts what it did."""

    def __init__(self, web_url: str) -> None:
        import httpx

        import ferry

        self.add = ferry.Function.from_name("bench-soak", "add")
        self.http = httpx.Client(base_url=web_url.rstrip("/") + "/", timeout=60)
        self.rounds = self.calls = self.requests = 0

    def round(self) -> None:
        spawned = self.add.spawn(-1)
        for i in range(20):
            assert self.add.remote(i) == i + 1
        assert sum(self.add.map(range(200))) == sum(range(1, 201))
        for i in range(20):
            response = self.http.get("", params={"n": i})
            assert response.status_code == 200 and response.json() == {"n": i}, response.text
        assert spawned.get(timeout=60) == 0
        self.calls += 20 + 200 + 1
        self.requests += 20
        self.rounds += 1


def verdict(samples: list[Sample]) -> dict[str, object]:
    third = max(1, len(samples) // 3)
    first, last = samples[:third], samples[-third:]
    rss_first = statistics.mean(s.rss_mib for s in first)
    rss_last = statistics.mean(s.rss_mib for s in last)
    fd_first, fd_last = max(s.fds for s in first), max(s.fds for s in last)
    ratio, mib = MEMORY_GROWTH
    memory_growing = rss_last > rss_first * (1 + ratio) and rss_last - rss_first > mib
    fds_growing = fd_last - fd_first > FD_GROWTH
    return {"rss_first_mib": round(rss_first, 1), "rss_last_mib": round(rss_last, 1),
            "rss_kib_per_100k_inputs": round(slope(samples) * 1024 * 100_000, 1),
            "fds_first_max": fd_first, "fds_last_max": fd_last,
            "memory": "growing" if memory_growing else "flat", "fds": "growing" if fds_growing else "flat"}


def slope(samples: list[Sample]) -> float:
    """Least-squares MiB of server memory per input done (0 with fewer than two samples)."""
    if len(samples) < 2 or len({s.calls for s in samples}) < 2:
        return 0.0
    return statistics.linear_regression([s.calls for s in samples], [s.rss_mib for s in samples]).slope


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--period", type=float, default=2.0, help="the schedule's period in seconds")
    parser.add_argument("--json", type=Path, default=None, help="also write the samples and verdict here")
    options = parser.parse_args()
    if options.minutes <= 0 or options.interval <= 0:
        parser.error("--minutes and --interval must be positive")
    with tempfile.TemporaryDirectory(prefix="ferry-soak-") as tmp:
        home, ticks = Path(tmp) / "home", Path(tmp) / "ticks.txt"
        home.mkdir()
        app_file = Path(tmp) / "bench_soak_app.py"
        app_file.write_text(APP.format(period=options.period, out=str(ticks)))
        os.environ.update(FERRY_RUNTIME="process", FERRY_WEB_PORT="0")
        server = start_server(home)
        pid = json.loads((home / "server.json").read_text())["pid"]
        os.environ.update(FERRY_HOME=str(home), FERRY_SERVER_URL=server["url"])
        try:
            subprocess.run([sys.executable, "-m", "ferry", "deploy", str(app_file)], env=os.environ.copy(),
                           check=True, capture_output=True)
            import ferry

            web_url = ferry.Function.from_name("bench-soak", "echo").get_web_url()
            work = Work(web_url)
            work.round()  # warm-up, before the first sample
            samples = soak(work, pid, ticks, options.minutes * 60, options.interval)
        finally:
            server["stop"]()
    result = verdict(samples)
    print(table(samples, options.interval))
    print()
    print(f"server memory: {result['rss_first_mib']} MiB (first third, mean) -> {result['rss_last_mib']} MiB "
          f"(last third): {result['memory']} (trend: {result['rss_kib_per_100k_inputs']:+} KiB per 100,000 inputs)")
    print(f"server open files: {result['fds_first_max']} (first third, most) -> {result['fds_last_max']} "
          f"(last third): {result['fds']}")
    last = samples[-1]
    print(f"work: {last.rounds} rounds, {last.calls:,} inputs, {last.requests:,} web requests, "
          f"{last.ticks} scheduled runs (period {options.period:g} s) in {last.seconds:.0f} s")
    if options.json is not None:
        options.json.write_text(json.dumps({"samples": [asdict(s) for s in samples], "verdict": result}, indent=2))


def soak(work: Work, pid: int, ticks: Path, seconds: float, interval: float) -> list[Sample]:
    """Run rounds of work for `seconds` while sampling the server every `interval` seconds."""
    samples: list[Sample] = []
    done = threading.Event()
    started = time.monotonic()

    def sample() -> None:
        while True:
            stop = done.is_set()  # (one last sample once the work is done)
            count = len(ticks.read_text().split()) if ticks.exists() else 0
            samples.append(Sample(round(time.monotonic() - started, 1), round(rss_mib(pid), 1), open_fds(pid),
                                  work.rounds, work.calls, work.requests, count))
            if stop:
                return
            done.wait(interval)

    sampler = threading.Thread(target=sample, name="soak-sampler", daemon=True)
    sampler.start()
    try:
        while time.monotonic() - started < seconds:
            work.round()
    finally:
        done.set()
        sampler.join()
    return samples


def table(samples: list[Sample], interval: float) -> str:
    lines = ["| t (s) | server RSS (MiB) | open fds | rounds | inputs | web requests | scheduled runs |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    step = max(1, round(30 / interval))  # about one row per 30 s, and the last sample
    for i, s in enumerate(samples):
        if i % step == 0 or i == len(samples) - 1:
            lines.append(f"| {s.seconds:.0f} | {s.rss_mib:.1f} | {s.fds} | {s.rounds} | {s.calls:,} | "
                         f"{s.requests:,} | {s.ticks} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
