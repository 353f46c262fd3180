"""Cold start of a class that imports pandas in its @enter, with and without a memory
snapshot, on the process and the sandbox runtimes, side by side in one run.

    python bench/snapshots.py [--n 8] [--runtimes process,sandbox]

Starts a throwaway server per runtime and alternates the measurements of the same image and
code: a cold start (a new app run, so no container exists: `Cls().total.remote()` until its
result) of `Plain` (`@enter()` imports pandas and builds a DataFrame) and of `Snapped` (the
same in `@enter(snap=True)`, `enable_memory_snapshot=True`). The first sample of each is left
out: it builds the image and, for `Snapped`, makes the snapshot (which later runs reuse: its
key is the image, the code and the class, not the run). The sandbox runtime needs root
(FERRY_BASE_ROOTFS_DIR may point at a prebuilt base). Prints a Markdown table
(docs/benchmarks.md, "Memory snapshots").

    python bench/snapshots.py --library torch --runtimes process

does the same with `import torch` (a torch-sized import: its image installs torch and its
CUDA libraries from PyPI, about 5 GB, once).
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


TORCH_IMAGE = ferry.Image.debian_slim().pip_install("torch", "numpy")


@app.cls(image=TORCH_IMAGE)
class PlainTorch:
    @ferry.enter()
    def load(self) -> None:
        import torch

        self.tensor = torch.arange(1000)

    @ferry.method()
    def total(self) -> int:
        return int(self.tensor.sum())


@app.cls(image=TORCH_IMAGE, enable_memory_snapshot=True)
class SnappedTorch:
    @ferry.enter(snap=True)
    def load(self) -> None:
        import torch

        self.tensor = torch.arange(1000)

    @ferry.method()
    def total(self) -> int:
        return int(self.tensor.sum())


LIBRARIES = {"pandas": (Plain, Snapped), "torch": (PlainTorch, SnappedTorch)}


def cold_start(cls: ferry.Cls) -> float:
    with app.run(show_logs=False):
        start = time.perf_counter()
        assert cls().total.remote() == 499500
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=8, help="samples of each kind")
    parser.add_argument("--runtimes", default="process,sandbox", help="comma-separated: process, sandbox")
    parser.add_argument("--library", choices=sorted(LIBRARIES), default="pandas",
                        help="what @enter imports (default: pandas)")
    args = parser.parse_args()
    from cold_start import quantiles
    from server_process import start_server

    runtimes = [r for r in args.runtimes.split(",") if r]
    unknown = set(runtimes) - {"process", "sandbox"}
    if unknown:
        parser.error(f"unknown runtime(s) {', '.join(sorted(unknown))}: choose among process, sandbox")
    servers: dict[str, tuple[Path, dict]] = {}
    samples = {(runtime, kind): [] for runtime in runtimes for kind in ("plain", "snapshot")}
    try:
        for runtime in runtimes:
            home = Path(tempfile.mkdtemp(prefix=f"ferry-bench-snapshots-{runtime}-"))
            servers[runtime] = (home, start_server(home, {"FERRY_RUNTIME": runtime}))
        for round_ in range(args.n + 1):  # round 0 warms up: the image, the snapshot, the OS caches
            for runtime, (home, server) in servers.items():
                os.environ["FERRY_SERVER_URL"] = server["url"]
                os.environ["FERRY_HOME"] = str(home)  # its administrator credential
                plain, snapped = (cold_start(cls) for cls in LIBRARIES[args.library])
                if round_:
                    samples[runtime, "plain"].append(plain)
                    samples[runtime, "snapshot"].append(snapped)
    finally:
        for _, server in servers.values():
            server["stop"]()
    print(f"\n{os.cpu_count()} cores · Python {sys.version.split()[0]} · {time.strftime('%Y-%m-%d')} · "
          f"{args.n} samples each, interleaved\n")
    print(f"| runtime | class (imports {args.library} in @enter) | median | p90 |")
    print("| --- | --- | --- | --- |")
    for runtime in runtimes:
        print(f"| {runtime} | without snapshot | {quantiles(samples[runtime, 'plain'])} |")
        print(f"| {runtime} | enable_memory_snapshot, @enter(snap=True) | {quantiles(samples[runtime, 'snapshot'])} |")
    print()
    for runtime in runtimes:
        ratio = statistics.median(samples[runtime, "snapshot"]) / statistics.median(samples[runtime, "plain"])
        print(f"{runtime}: snapshot / plain (medians): {ratio:.2f}")


if __name__ == "__main__":
    main()
