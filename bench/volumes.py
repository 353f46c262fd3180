"""Volume costs: transfers through the Python API, filling a container's view (cold and warm
host cache), committing from a container, and many small files.

    python bench/volumes.py [--mib 256] [--files 10000] [--runtime process|sandbox]

Starts a throwaway server (process runtime by default; as root it binds volumes in a private
mount namespace) and prints a Markdown table (the one in docs/benchmarks.md comes from here).
Container figures are the time of one call minus that of the same call to a function without
volumes started the same way (container start is in both).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import ferry  # noqa: E402

MOUNT = "/tmp/ferry-bench-volume"
app = ferry.App("bench-volumes", image=ferry.Image.debian_slim(python_version="3.11"))
big = ferry.Volume.from_name("bench-big", create_if_missing=True)
small = ferry.Volume.from_name("bench-small", create_if_missing=True)
scratch = ferry.Volume.from_name("bench-scratch", create_if_missing=True)


@app.function()
def plain() -> int:
    return 0


@app.function(volumes={MOUNT: big})
def read_big() -> int:
    return os.path.getsize(f"{MOUNT}/big.bin")


@app.function(volumes={MOUNT: small})
def count_small() -> float:
    """Files in the view, and how long a commit with nothing changed takes (a scan)."""
    started = time.perf_counter()
    small.commit()
    return time.perf_counter() - started


@app.function(volumes={MOUNT: scratch}, timeout=600)
def write_and_commit(mib: int) -> float:
    with open(f"{MOUNT}/new.bin", "wb") as handle:
        for _ in range(mib):
            handle.write(os.urandom(1024 * 1024))
    started = time.perf_counter()
    scratch.commit()
    return time.perf_counter() - started


def timed(fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - started, result


def fresh_call(function, *args) -> tuple[float, object]:
    """A call in a new app run, so its container starts for it."""
    with app.run(show_logs=False):
        return timed(function.remote, *args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=256, help="size of the big file")
    parser.add_argument("--files", type=int, default=10_000, help="number of small files (1 KiB each)")
    parser.add_argument("--runtime", default="process", choices=["process", "sandbox"])
    args = parser.parse_args()
    from server_process import start_server

    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="ferry-bench-volumes-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        server = start_server(home, {"FERRY_RUNTIME": args.runtime})
        os.environ["FERRY_SERVER_URL"] = server["url"]
        try:
            size = args.mib * 1024 * 1024
            local = Path(tmp) / "big.bin"
            with open(local, "wb") as handle:
                for _ in range(args.mib):
                    handle.write(os.urandom(1024 * 1024))
            seconds, _ = timed(lambda: _upload(big, local, "big.bin"))
            rows.append((f"batch_upload of a {args.mib} MiB file", f"{seconds:.2f} s ({args.mib / seconds:.0f} MiB/s)"))
            seconds, _ = timed(lambda: _upload(big, local, "same.bin"))
            rows.append(("the same content again, another path (no data sent)", f"{seconds:.2f} s"))
            seconds, data = timed(lambda: sum(len(c) for c in big.read_file("big.bin")))
            assert data == size
            rows.append((f"read_file of it", f"{seconds:.2f} s ({args.mib / seconds:.0f} MiB/s)"))

            fresh_call(plain)  # the image (and, on the process runtime, the zygote) exist from here on
            base, _ = fresh_call(plain)
            cold, result = fresh_call(read_big)
            assert result == size
            warm, _ = fresh_call(read_big)
            rows.append(("container start, no volume (baseline)", f"{base * 1000:.0f} ms"))
            rows.append((f"+ view of 2 x {args.mib} MiB, host cache empty", f"+{(cold - base):.2f} s"))
            rows.append((f"+ view of 2 x {args.mib} MiB, host cache warm", f"+{(warm - base):.2f} s"))
            _, commit_seconds = fresh_call(write_and_commit, args.mib)
            rows.append((f"commit() of {args.mib} MiB written in a container", f"{commit_seconds:.2f} s "
                         f"({args.mib / commit_seconds:.0f} MiB/s)"))

            with small.batch_upload() as batch:
                started = time.perf_counter()
                for index in range(args.files):
                    batch.put_file(io.BytesIO(os.urandom(1024)), f"d{index // 1000}/f{index}")
            seconds = time.perf_counter() - started
            rows.append((f"batch_upload of {args.files:,} files of 1 KiB", f"{seconds:.2f} s"))
            small_start, scan = fresh_call(count_small)
            rows.append((f"+ view of {args.files:,} files (cold cache)", f"+{(small_start - base - scan):.2f} s"))
            rows.append((f"commit() with nothing changed, {args.files:,} files", f"{scan * 1000:.0f} ms"))
        finally:
            server["stop"]()
    print(f"\n{args.runtime} runtime\n\n| measurement | value |\n| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")


def _upload(volume: ferry.Volume, local: Path, remote: str) -> None:
    with volume.batch_upload(force=True) as batch:
        batch.put_file(local, remote)


if __name__ == "__main__":
    main()
