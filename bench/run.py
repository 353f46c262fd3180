"""Ferry next to Ray (local) and ProcessPoolExecutor, in one run, on the same machine.

    python bench/run.py [--quick] [--skip-ray] [--json bench/results/latest.json]

Measures, for each system:
  warm   round trip of a trivial call to an already-running worker (p50, p99)
  logs   the same for a function that prints one line per call, its output shown in this
         process as `ferry run` shows it (Ferry: `app.run()`, logs on; the pool: the worker's
         own stdout); this process's stdout goes to /dev/null meanwhile
  map    throughput of mapping a trivial function over 10,000 inputs (inputs/s)
  cold   first call to a new function/worker until its result (median of several)
Prints a Markdown table (the one in docs/benchmarks.md comes from here).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def trivial(x: int) -> int:
    return x + 1


def chatty(x: int) -> int:
    print("working on", x, flush=True)
    return x + 1


@contextlib.contextmanager
def stdout_to_devnull() -> Iterator[None]:
    """Send this process's stdout (and that of the children it starts meanwhile) to /dev/null."""
    sys.stdout.flush()
    saved = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": ordered[len(ordered) // 2] * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
    }


def time_calls(call: Callable[[], Any], n: int, warmup: int = 50) -> dict[str, float]:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return percentiles(samples)


def throughput(run_map: Callable[[list[int]], list[int]], n: int) -> float:
    inputs = list(range(n))
    start = time.perf_counter()
    results = run_map(inputs)
    elapsed = time.perf_counter() - start
    assert results == [x + 1 for x in inputs], "wrong map results"
    return n / elapsed


# -- Ferry ----------------------------------------------------------------------------------
def bench_ferry(args: argparse.Namespace) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="ferry-bench-"))
    os.environ["FERRY_HOME"] = str(home)
    from server_process import start_server

    server = start_server(home)
    os.environ["FERRY_SERVER_URL"] = server["url"]
    try:
        import ferry_app

        result: dict[str, Any] = {}
        with ferry_app.app.run(show_logs=False):
            ferry_app.trivial.remote(0)
            result["warm"] = time_calls(lambda: ferry_app.trivial.remote(1), args.calls)
            result["map_per_s"] = throughput(lambda xs: list(ferry_app.trivial.map(xs)), args.map_n)
        with stdout_to_devnull(), ferry_app.app.run():  # logs shown, as `ferry run` does
            ferry_app.chatty.remote(0)
            result["logs"] = time_calls(lambda: ferry_app.chatty.remote(1), args.calls)
            result["logs_trivial"] = time_calls(lambda: ferry_app.trivial.remote(1), args.calls)
        colds = []
        for _ in range(args.cold_n):
            with ferry_app.app.run(show_logs=False):
                start = time.perf_counter()
                ferry_app.cold.remote(1)
                colds.append(time.perf_counter() - start)
        result["cold_ms"] = statistics.median(colds) * 1000
        return result
    finally:
        server["stop"]()


# -- Ray ------------------------------------------------------------------------------------
def bench_ray(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:  # ray.shutdown() ends the processes ray.init started, whatever happens here
        init_s = time.perf_counter() - start
        remote_trivial = ray.remote(trivial)
        ray.get(remote_trivial.remote(0))
        result: dict[str, Any] = {"init_s": init_s}
        result["warm"] = time_calls(lambda: ray.get(remote_trivial.remote(1)), args.calls)
        result["map_per_s"] = throughput(lambda xs: ray.get([remote_trivial.remote(x) for x in xs]), args.map_n)

        @ray.remote
        class Worker:
            def call(self, x: int) -> int:
                return x + 1

        colds = []
        for _ in range(args.cold_n):
            start = time.perf_counter()
            worker = Worker.remote()  # type: ignore[attr-defined]
            ray.get(worker.call.remote(1))
            colds.append(time.perf_counter() - start)
            ray.kill(worker)
        result["cold_ms"] = statistics.median(colds) * 1000
        return result
    finally:
        ray.shutdown()


# -- ProcessPoolExecutor ---------------------------------------------------------------------
def bench_pool(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    workers = os.cpu_count() or 2
    with ProcessPoolExecutor(workers) as pool:
        pool.submit(trivial, 0).result()
        result["warm"] = time_calls(lambda: pool.submit(trivial, 1).result(), args.calls)
        result["map_per_s"] = throughput(lambda xs: list(pool.map(trivial, xs, chunksize=64)), args.map_n)
    with stdout_to_devnull(), ProcessPoolExecutor(workers) as pool:  # workers inherit the stdout
        pool.submit(chatty, 0).result()
        result["logs"] = time_calls(lambda: pool.submit(chatty, 1).result(), args.calls)
    colds = []
    for _ in range(args.cold_n):
        start = time.perf_counter()
        with ProcessPoolExecutor(1) as pool:
            pool.submit(trivial, 1).result()
            colds.append(time.perf_counter() - start)
    result["cold_ms"] = statistics.median(colds) * 1000
    return result


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| system | warm p50 | warm p99 | printing, output shown: p50 / p99 | map 10k (inputs/s) | cold start |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | {r['error']} | | | | |")
            continue
        logs = f"{r['logs']['p50_ms']:.2f} ms / {r['logs']['p99_ms']:.2f} ms" if "logs" in r else "n/a"
        lines.append(f"| {name} | {r['warm']['p50_ms']:.2f} ms | {r['warm']['p99_ms']:.2f} ms | {logs} | "
                     f"{r['map_per_s']:,.0f} | {r['cold_ms']:.0f} ms |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write raw results here")
    args = parser.parse_args()
    args.calls = 300 if args.quick else 2000
    args.map_n = 10_000
    args.cold_n = 3 if args.quick else 7
    results: dict[str, dict[str, Any]] = {}
    systems: list[tuple[str, Callable[[argparse.Namespace], dict[str, Any]]]] = [
        ("Ferry (process runtime)", bench_ferry), ("ProcessPoolExecutor", bench_pool)]
    if not args.skip_ray:
        systems.append(("Ray (local)", bench_ray))
    for name, fn in systems:
        print(f"running {name}...", file=sys.stderr)
        try:
            results[name] = fn(args)
        except ImportError as exc:
            results[name] = {"error": f"not installed ({exc.name})"}
    print(f"\n{platform.node()} · {os.cpu_count()} cores · Python {platform.python_version()} · "
          f"{time.strftime('%Y-%m-%d')}\n")
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
