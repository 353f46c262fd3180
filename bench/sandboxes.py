"""Sandbox create-to-first-exec-output next to a function's cold start, in one run.

    python bench/sandboxes.py [--n 10] [--runtime process|sandbox|both]

Starts a throwaway server per runtime and alternates, on each, two measurements of the same
image: a function's cold start (a new app, so no container exists: `f.remote(1)` until its
result) and a sandbox's start (`Sandbox.create()`, then `exec("echo", "hi")` until its first
line of stdout arrives). The first sample of each kind is left out (it builds or checks the
image and warms the OS caches). Prints a Markdown table (docs/benchmarks.md, "Sandboxes").
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import ferry  # noqa: E402

IMAGE = ferry.Image.debian_slim(python_version="3.11")
app = ferry.App("bench-sandboxes", image=IMAGE)


@app.function()
def cold(x: int) -> int:
    return x + 1


def function_cold_start() -> float:
    with app.run(show_logs=False):
        start = time.perf_counter()
        assert cold.remote(1) == 2
        return time.perf_counter() - start


def sandbox_first_output(target: ferry.App) -> float:
    start = time.perf_counter()
    sb = ferry.Sandbox.create(app=target, image=IMAGE)
    line = next(iter(sb.exec("echo", "hi").stdout))
    elapsed = time.perf_counter() - start
    assert line == "hi\n"
    sb.terminate()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10, help="samples of each kind per runtime")
    parser.add_argument("--runtime", choices=("process", "sandbox", "both"), default="both")
    args = parser.parse_args()
    from cold_start import quantiles
    from server_process import start_server

    runtimes = ["process", "sandbox"] if args.runtime == "both" else [args.runtime]
    results: dict[str, dict[str, list[float]]] = {}
    for runtime in runtimes:
        home = Path(tempfile.mkdtemp(prefix=f"ferry-bench-sandbox-{runtime}-"))
        server = start_server(home, {"FERRY_RUNTIME": runtime})
        os.environ["FERRY_SERVER_URL"] = server["url"]
        os.environ["FERRY_HOME"] = str(home)  # its administrator credential
        try:
            target = ferry.App.lookup("bench-sandboxes-target", create_if_missing=True)
            function_cold_start(), sandbox_first_output(target)  # warm-up: the image, the OS caches
            samples: dict[str, list[float]] = {"function": [], "sandbox": []}
            for _ in range(args.n):
                samples["function"].append(function_cold_start())
                samples["sandbox"].append(sandbox_first_output(target))
            results[runtime] = samples
        finally:
            server["stop"]()
    print(f"\n{os.cpu_count()} cores · Python {sys.version.split()[0]} · {time.strftime('%Y-%m-%d')} · "
          f"{args.n} samples each, interleaved\n")
    print("| runtime | measurement | median | p90 |")
    print("| --- | --- | --- | --- |")
    for runtime, samples in results.items():
        print(f"| {runtime} | function cold start (call to result) | {quantiles(samples['function'])} |")
        print(f"| {runtime} | sandbox create to first exec output | {quantiles(samples['sandbox'])} |")


if __name__ == "__main__":
    main()
