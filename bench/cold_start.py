"""Cold start of a trivial function on each runtime and start mode, in one run.

    python bench/cold_start.py [--n 15] [--runtimes process,sandbox]

Starts one throwaway server per mode: the process runtime with FERRY_ZYGOTE=1 (the default)
and FERRY_ZYGOTE=0, and the sandbox runtime with spare sandboxes (the default) and with
FERRY_SANDBOX_SPARES=0; and alternates between them: each sample opens a new app (so no
container exists) and times `f.remote(1)` until its result. Reports the median and 90th
percentile of that, and of the container start the server measured (process start to
`ready`, without @enter). The first sample of each server is left out: it also starts that
server's zygote or first spare. Prints a Markdown table (docs/benchmarks.md, "Cold start").
Sandbox servers build a Debian root filesystem unless FERRY_BASE_ROOTFS_DIR names a cache.
"""

from __future__ import annotations

import argparse
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
from ferry._client import Client  # noqa: E402

app = ferry.App("bench-cold-start")


@app.function()
def cold(x: int) -> int:
    return x + 1


def one_cold_start(url: str, home: str) -> tuple[float, float]:
    """Seconds from the call to its result, and the container start the server measured."""
    os.environ["FERRY_SERVER_URL"] = url
    os.environ["FERRY_HOME"] = home  # its administrator credential
    with app.run(show_logs=False):
        start = time.perf_counter()
        assert cold.remote(1) == 2
        elapsed = time.perf_counter() - start
        info = Client.for_url(url).request_sync("app.show", app=app.app_id)
    boot = info["functions"][0]["stats"]["boot_mean"]
    return elapsed, boot


def quantiles(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return f"{statistics.median(ordered) * 1000:.0f} ms | {p90 * 1000:.0f} ms"


MODES = {
    "zygote": ("process", {"FERRY_RUNTIME": "process", "FERRY_ZYGOTE": "1"},
               "process: forked from a zygote (default)"),
    "plain": ("process", {"FERRY_RUNTIME": "process", "FERRY_ZYGOTE": "0"},
              "process: `python -m ferry._container` (FERRY_ZYGOTE=0)"),
    "spares": ("sandbox", {"FERRY_RUNTIME": "sandbox"}, "sandbox: a spare sandbox claimed (default)"),
    "no-spares": ("sandbox", {"FERRY_RUNTIME": "sandbox", "FERRY_SANDBOX_SPARES": "0"},
                  "sandbox: a new sandbox (FERRY_SANDBOX_SPARES=0)"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=15, help="cold starts per mode")
    parser.add_argument("--runtimes", default="process,sandbox", help="comma-separated: process, sandbox")
    args = parser.parse_args()
    from server_process import start_server

    runtimes = set(args.runtimes.split(","))
    servers = {}
    for mode, (runtime, env, _) in MODES.items():
        if runtime in runtimes:
            home = Path(tempfile.mkdtemp(prefix=f"ferry-bench-cold-{mode}-"))
            servers[mode] = {**start_server(home, env), "home": str(home)}
    results: dict[str, dict[str, list[float]]] = {m: {"call": [], "boot": []} for m in servers}
    try:
        for server in servers.values():  # warm-up: the image, the zygote or first spare, the OS caches
            one_cold_start(server["url"], server["home"])
            time.sleep(1.0)
        for _ in range(args.n):
            for mode, server in servers.items():
                call, boot = one_cold_start(server["url"], server["home"])
                results[mode]["call"].append(call)
                results[mode]["boot"].append(boot)
    finally:
        for server in servers.values():
            server["stop"]()
    print(f"\n{os.cpu_count()} cores · Python {sys.version.split()[0]} · {time.strftime('%Y-%m-%d')} · "
          f"{args.n} cold starts each, interleaved\n")
    print("| runtime: start | call to result, median | p90 | container start, median | p90 |")
    print("| --- | --- | --- | --- | --- |")
    for mode in servers:
        r = results[mode]
        print(f"| {MODES[mode][2]} | {quantiles(r['call'])} | {quantiles(r['boot'])} |")
    if "zygote" in results and "spares" in results:
        ratio = statistics.median(results["spares"]["call"]) / statistics.median(results["zygote"]["call"])
        print(f"\nsandbox (spares) / process (zygote), call to result medians: {ratio:.2f}")


if __name__ == "__main__":
    main()
