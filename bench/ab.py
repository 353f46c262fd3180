"""Ferry at two revisions, side by side: warm `.remote()` and the 10,000-input map, alternated.

    python bench/ab.py BEFORE AFTER [--rounds 5] [--quick]

Each revision is checked out in a temporary git worktree and measured with its own
bench/run.py Ferry section (its own server, its own client code, this venv's packages),
round after round, alternating which goes first, so that both see the same machine load.
Prints the median of the rounds for each, and the ratio AFTER / BEFORE. Numbers on a shared
machine are noisy: compare the ratio, not the absolute values.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_MEASURE = r"""
import argparse, json, sys
sys.argv = ["run.py"]
import run
args = argparse.Namespace(calls=CALLS, map_n=10_000, cold_n=1, quick=False)
print("RESULT " + json.dumps(run.bench_ferry(args)))
"""


def measure(tree: Path, calls: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    env["PYTHONPATH"] = str(tree)  # its ferry, for the client and the server it starts
    done = subprocess.run([sys.executable, "-c", _MEASURE.replace("CALLS", str(calls))], cwd=tree / "bench",
                          env=env, capture_output=True, text=True, timeout=900)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"measuring {tree} failed:\n{done.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="500 warm calls a round instead of 2,000")
    args = parser.parse_args()
    calls = 500 if args.quick else 2000
    scratch = Path(tempfile.mkdtemp(prefix="ferry-ab-"))
    trees = {}
    try:
        for label, rev in (("before", args.before), ("after", args.after)):
            trees[label] = scratch / label
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(trees[label]), rev],
                           check=True)
        results: dict[str, list[dict]] = {"before": [], "after": []}
        for round_ in range(args.rounds):
            order = ("before", "after") if round_ % 2 == 0 else ("after", "before")
            for label in order:
                results[label].append(measure(trees[label], calls))
                print(f"round {round_ + 1} {label}: {results[label][-1]['warm']['p50_ms']:.3f} ms, "
                      f"{results[label][-1]['map_per_s']:,.0f}/s", file=sys.stderr)
    finally:
        for tree in trees.values():
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
    rows = []
    for what, pick in (("warm p50 (ms)", lambda r: r["warm"]["p50_ms"]),
                       ("warm p99 (ms)", lambda r: r["warm"]["p99_ms"]),
                       ("map 10k (inputs/s)", lambda r: r["map_per_s"])):
        before = statistics.median(pick(r) for r in results["before"])
        after = statistics.median(pick(r) for r in results["after"])
        rows.append(f"| {what} | {before:,.3f} | {after:,.3f} | {after / before:.2f} |")
    print(f"\nmedians of {args.rounds} alternated rounds\n")
    print(f"| | {args.before} | {args.after} | ratio |\n| --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
