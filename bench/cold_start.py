"""Cold start in the process runtime with and without zygotes (FERRY_ZYGOTE), in one run.

    python bench/cold_start.py [--n 15]

Starts two throwaway servers, one with FERRY_ZYGOTE=1 (the default) and one with
FERRY_ZYGOTE=0, and alternates between them: each sample opens a new app (so no container
exists) and times `f.remote(1)` until its result. Reports the median and 90th percentile of
that, and of the container start the server measured (process start to `ready`, without
@enter). The first sample of each server is left out: it also starts that server's zygote.
Prints a Markdown table (the one in docs/benchmarks.md comes from here).
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


def one_cold_start(url: str) -> tuple[float, float]:
    """Seconds from the call to its result, and the container start the server measured."""
    os.environ["FERRY_SERVER_URL"] = url
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=15, help="cold starts per mode")
    args = parser.parse_args()
    from server_process import start_server

    servers = {}
    for mode, flag in (("zygote", "1"), ("plain", "0")):
        home = Path(tempfile.mkdtemp(prefix=f"ferry-bench-cold-{mode}-"))
        servers[mode] = start_server(home, {"FERRY_ZYGOTE": flag})
    results: dict[str, dict[str, list[float]]] = {m: {"call": [], "boot": []} for m in servers}
    try:
        for mode, server in servers.items():  # warm-up: starts the zygote, fills the OS caches
            one_cold_start(server["url"])
            time.sleep(1.0)
        for _ in range(args.n):
            for mode, server in servers.items():
                call, boot = one_cold_start(server["url"])
                results[mode]["call"].append(call)
                results[mode]["boot"].append(boot)
    finally:
        for server in servers.values():
            server["stop"]()
    print(f"\n{os.cpu_count()} cores · Python {sys.version.split()[0]} · {time.strftime('%Y-%m-%d')} · "
          f"{args.n} cold starts each\n")
    print("| process runtime | call to result, median | p90 | container start, median | p90 |")
    print("| --- | --- | --- | --- | --- |")
    labels = {"plain": "`python -m ferry._container` (FERRY_ZYGOTE=0)", "zygote": "forked from a zygote (default)"}
    for mode in ("plain", "zygote"):
        r = results[mode]
        print(f"| {labels[mode]} | {quantiles(r['call'])} | {quantiles(r['boot'])} |")


if __name__ == "__main__":
    main()
