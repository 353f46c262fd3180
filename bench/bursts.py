"""The issue's burst: `.map` of 200 one-second inputs with max_containers=10 (about 20 s on 10
containers), and 10 one-second inputs with max_containers=1 (serial, about 10 s).

    python bench/bursts.py [--n 200] [--seconds 1.0]

Reports wall time, distinct containers (pids) and the most live containers `app.show` showed
(sampled every 20 ms). Prints a Markdown table (the one in docs/benchmarks.md comes from here).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import ferry  # noqa: E402
from ferry._client import Client  # noqa: E402

app = ferry.App("bench-bursts")


@app.function(max_containers=10)
def ten(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


@app.function(max_containers=1)
def one(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def burst(url: str, fn: ferry.Function, tag: str, n: int, seconds: float) -> dict:
    client = Client.for_url(url)
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            info = client.request_sync("app.show", app=app.app_id)
            samples.extend(len(f["containers"]) for f in info["functions"] if f["tag"] == tag)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    sampler.start()
    pids = list(fn.map([seconds] * n))
    elapsed = time.perf_counter() - start
    done.set()
    sampler.join()
    return {"elapsed": elapsed, "pids": len(set(pids)), "max_live": max(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    from server_process import start_server

    home = Path(tempfile.mkdtemp(prefix="ferry-bench-bursts-"))
    server = start_server(home)
    os.environ["FERRY_SERVER_URL"] = server["url"]
    try:
        with app.run(show_logs=False):
            wide = burst(server["url"], ten, "ten", args.n, args.seconds)
            narrow = burst(server["url"], one, "one", 10, args.seconds)
    finally:
        server["stop"]()
    print(f"\n{os.cpu_count()} cores · Python {sys.version.split()[0]} · {time.strftime('%Y-%m-%d')}\n")
    print("| burst | ideal | wall time | containers used | most live at once |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| {args.n} × {args.seconds:g} s, max_containers=10 | {args.n * args.seconds / 10:.0f} s | "
          f"{wide['elapsed']:.1f} s | {wide['pids']} | {wide['max_live']} |")
    print(f"| 10 × {args.seconds:g} s, max_containers=1 | {10 * args.seconds:.0f} s | "
          f"{narrow['elapsed']:.1f} s | {narrow['pids']} | {narrow['max_live']} |")


if __name__ == "__main__":
    main()
