"""Queues between containers: put→get latency and put_many/get_many throughput.

    python bench/queues.py [--rounds 2000] [--items 100000] [--batch 500]

Latency: a producer container puts an item on partition "ping" and waits on "pong"; a consumer
container, blocked in get("ping"), puts each item back on "pong". One round trip is two
put→get hops through the control plane, each waking a blocked get (server-side waiters, no
polling); the hop is half the round trip. Also measured from this process to itself
(put, then get of the same item) for comparison.

Throughput: this process puts `--items` small items with put_many in batches of `--batch`
(blocking while the partition holds 5,000), while a container takes them with
get_many(`--batch`); items/s from the first put to the last get. Prints a Markdown table
(docs/benchmarks.md comes from here) and writes bench/results/queues.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import ferry  # noqa: E402

app = ferry.App("bench-queues")


@app.function(timeout=600)
def consumer(queue_id: str, rounds: int) -> None:
    q = ferry.Queue.from_id(queue_id)
    for _ in range(rounds):
        q.put(q.get(partition="ping"), partition="pong")


@app.function(timeout=600)
def producer(queue_id: str, rounds: int) -> list[float]:
    q = ferry.Queue.from_id(queue_id)
    times = []
    for index in range(rounds):
        started = time.perf_counter()
        q.put(index, partition="ping")
        q.get(partition="pong")
        times.append(time.perf_counter() - started)
    return times


@app.function(timeout=600)
def drain(queue_id: str, total: int, batch: int) -> float:
    """get_many until `total` items arrived; the wall-clock time of the last one."""
    q = ferry.Queue.from_id(queue_id)
    got = 0
    while got < total:
        got += len(q.get_many(batch))
    return time.time()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    from server_process import start_server

    home = Path(tempfile.mkdtemp(prefix="ferry-bench-queues-"))
    server = start_server(home)
    os.environ["FERRY_SERVER_URL"] = server["url"]
    os.environ["FERRY_HOME"] = str(home)
    results: dict = {}
    try:
        with app.run(show_logs=False), ferry.Queue.ephemeral() as q:
            warm = args.rounds // 10
            consumer.spawn(q.object_id, args.rounds + warm)
            producer.remote(q.object_id, warm)  # both containers started and warm
            rounds = producer.remote(q.object_id, args.rounds)
            hops = [t / 2 for t in rounds]
            local = []
            for index in range(args.rounds):
                started = time.perf_counter()
                q.put(index)
                q.get()
                local.append(time.perf_counter() - started)
            results["latency"] = {
                "rounds": args.rounds,
                "hop_p50_ms": percentile(hops, 0.5) * 1e3, "hop_p99_ms": percentile(hops, 0.99) * 1e3,
                "round_trip_p50_ms": percentile(rounds, 0.5) * 1e3,
                "round_trip_p99_ms": percentile(rounds, 0.99) * 1e3,
                "local_put_get_p50_ms": percentile(local, 0.5) * 1e3,
                "local_put_get_p99_ms": percentile(local, 0.99) * 1e3,
                "hop_mean_ms": statistics.fmean(hops) * 1e3,
            }
            q.put("warm-up")
            drain.remote(q.object_id, 1, 1)  # its container is started and warm
            items = list(range(args.batch))
            call = drain.spawn(q.object_id, args.items, args.batch)
            time.sleep(0.5)  # it is blocked in get_many
            started = time.time()
            put_seconds = 0.0
            for _ in range(args.items // args.batch):
                before = time.perf_counter()
                q.put_many(items)
                put_seconds += time.perf_counter() - before
            finished = call.get()
            results["throughput"] = {
                "items": args.items, "batch": args.batch,
                "end_to_end_items_per_s": args.items / (finished - started),
                "put_many_calls_per_s": (args.items // args.batch) / put_seconds,
            }
    finally:
        server["stop"]()
    latency, throughput = results["latency"], results["throughput"]
    print(f"\n{os.cpu_count()} cores · Python {sys.version.split()[0]} · {time.strftime('%Y-%m-%d')}\n")
    print("| measure | p50 | p99 |")
    print("| --- | --- | --- |")
    print(f"| put→get hop, container to container | {latency['hop_p50_ms']:.2f} ms | {latency['hop_p99_ms']:.2f} ms |")
    print(f"| round trip (two hops) | {latency['round_trip_p50_ms']:.2f} ms | "
          f"{latency['round_trip_p99_ms']:.2f} ms |")
    print(f"| put then get, one local client | {latency['local_put_get_p50_ms']:.2f} ms | "
          f"{latency['local_put_get_p99_ms']:.2f} ms |")
    print(f"\nput_many({args.batch}) → get_many({args.batch}) in a container: "
          f"{throughput['end_to_end_items_per_s']:,.0f} items/s end to end over {args.items:,} items")
    out = HERE / "results" / "queues.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
