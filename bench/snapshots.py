"""Cold start of a class that imports pandas in its @enter, with and without a memory
snapshot, in one run (process runtime: the runtime that makes snapshots today).

    python bench/snapshots.py [--n 8]

Starts a throwaway server and alternates two measurements of the same image and code: a cold
start (a new app run, so no container exists: `Cls().total.remote()` until its result) of
`Plain` (`@enter()` imports pandas and builds a DataFrame) and of `Snapped` (the same in
`@enter(snap=True)`, `enable_memory_snapshot=True`). The first sample of each is left out:
it builds the image and, for `Snapped`, makes the snapshot (which later runs reuse: its key is
the image, the code and the class, not the run). Prints a Markdown table (docs/benchmarks.md,
"Memory snapshots").
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

IMAGE = ferry.Image.debian_slim().pip_install("pandas")
app = ferry.App("bench-snapshots", image=IMAGE)


@app.cls()
class Plain:
    @ferry.enter()
    def load(self) -> None:
        import pandas

        self.frame = pandas.DataFrame({"a": range(1000)})

    @ferry.method()
    def total(self) -> int:
        return int(self.frame["a"].sum())


@app.cls(enable_memory_snapshot=True)
class Snapped:
    @ferry.enter(snap=True)
    def load(self) -> None:
        import pandas

        self.frame = pandas.DataFrame({"a": range(1000)})

    @ferry.method()
    def total(self) -> int:
        return int(self.frame["a"].sum())


def cold_start(cls: ferry.Cls) -> float:
    with app.run(show_logs=False):
        start = time.perf_counter()
        assert cls().total.remote() == 499500
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=8, help="samples of each kind")
    args = parser.parse_args()
    from cold_start import quantiles
    from server_process import start_server

    home = Path(tempfile.mkdtemp(prefix="ferry-bench-snapshots-"))
    server = start_server(home, {"FERRY_RUNTIME": "process"})
    os.environ["FERRY_SERVER_URL"] = server["url"]
    os.environ["FERRY_HOME"] = str(home)  # its administrator credential
    samples: dict[str, list[float]] = {"plain": [], "snapshot": []}
    try:
        cold_start(Plain), cold_start(Snapped)  # warm-up: the image, the snapshot, the OS caches
        for _ in range(args.n):
            samples["plain"].append(cold_start(Plain))
            samples["snapshot"].append(cold_start(Snapped))
    finally:
        server["stop"]()
    ratio = statistics.median(samples["snapshot"]) / statistics.median(samples["plain"])
    print(f"\n{os.cpu_count()} cores · Python {sys.version.split()[0]} · {time.strftime('%Y-%m-%d')} · "
          f"{args.n} samples each, interleaved · process runtime\n")
    print("| class (imports pandas in @enter) | median | p90 |")
    print("| --- | --- | --- |")
    print(f"| without snapshot | {quantiles(samples['plain'])} |")
    print(f"| enable_memory_snapshot, @enter(snap=True) | {quantiles(samples['snapshot'])} |")
    print(f"\nsnapshot / plain (medians): {ratio:.2f}")


if __name__ == "__main__":
    main()
