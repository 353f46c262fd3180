"""Images and the sandbox runtime, measured on this machine:

    python bench/images.py [--fresh-base] [--cold-n 9] [--json FILE]

  cold start   first call to a function with no container yet (new app each time, image
               cached), p50: sandbox runtime next to the process runtime
  first build  `Image.debian_slim()` in a new FERRY_HOME (the Ferry runtime layer; with
               --fresh-base also the Debian root filesystem from mmdebstrap), then one
               `pip_install` layer on top of it
  no-op build  `image.build` of an image whose every layer is cached, as `ferry run` does it
               (client-side resolution + server lookup)
Prints a Markdown table (docs/benchmarks.md, "Images and sandbox").
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
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import ferry  # noqa: E402
from ferry._client import Client  # noqa: E402
from ferry._sync import run_sync  # noqa: E402

PIP_PACKAGES = ("requests==2.31.0",)

py313 = ferry.App("bench-images-py313", image=ferry.Image.debian_slim(python_version="3.13"))


@py313.function()
def cold313(x: int) -> int:
    return x + 1


def build_seconds(image: ferry.Image) -> float:
    """Wall time of `image.build` for `image`, blobs uploaded first (not timed)."""
    async def go() -> float:
        client = await Client.from_env()
        wire = image._wire()
        start = time.perf_counter()
        await client.request("image.build", image=wire.definition)
        return time.perf_counter() - start

    return run_sync(go())


def noop_seconds(image: ferry.Image, n: int = 20) -> float:
    """p50 of resolving the recipe and asking the server to build it, all layers cached."""
    async def go() -> float:
        client = await Client.from_env()
        start = time.perf_counter()
        wire = image._wire()
        missing = await client.request("blob.missing", hashes=list(wire.blobs))
        assert not missing
        await client.request("image.build", image=wire.definition)
        return time.perf_counter() - start

    return statistics.median(run_sync(go()) for _ in range(n))


def cold_starts(runtime: str, n: int, *, python313: bool = False) -> list[float]:
    from server_process import start_server

    import ferry_app

    home = Path(tempfile.mkdtemp(prefix=f"ferry-bench-{runtime}-"))
    os.environ["FERRY_RUNTIME"] = runtime
    server = start_server(home)
    os.environ["FERRY_SERVER_URL"] = server["url"]
    app, function = (py313, cold313) if python313 else (ferry_app.app, ferry_app.cold)
    try:
        with app.run(show_logs=False):  # builds (or finds) the image
            function.remote(0)
        samples = []
        for _ in range(n):
            with app.run(show_logs=False):
                start = time.perf_counter()
                function.remote(1)
                samples.append(time.perf_counter() - start)
        return samples
    finally:
        server["stop"]()


def builds(fresh_base: bool) -> dict[str, float]:
    from server_process import start_server

    home = Path(tempfile.mkdtemp(prefix="ferry-bench-images-"))
    os.environ["FERRY_RUNTIME"] = "sandbox"
    if fresh_base:
        os.environ["FERRY_BASE_ROOTFS_DIR"] = str(home / "base")
    server = start_server(home)
    os.environ["FERRY_SERVER_URL"] = server["url"]
    try:
        base = ferry.Image.debian_slim(python_version="3.11")
        with_pip = base.pip_install(*PIP_PACKAGES)
        result = {"debian_slim_s": build_seconds(base), "pip_layer_s": build_seconds(with_pip)}
        result["noop_ms"] = noop_seconds(with_pip) * 1000
        return result
    finally:
        server["stop"]()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fresh-base", action="store_true", help="also build the Debian root filesystem")
    parser.add_argument("--cold-n", type=int, default=9)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("FERRY_BASE_ROOTFS_DIR", "/var/cache/ferry-test")
    results: dict[str, Any] = {"builds": builds(args.fresh_base)}
    for name, runtime, python313 in (("sandbox", "sandbox", False), ("sandbox313", "sandbox", True),
                                     ("process", "process", False)):
        samples = cold_starts(runtime, args.cold_n, python313=python313)
        results[name] = {"cold_p50_ms": statistics.median(samples) * 1000, "cold_max_ms": max(samples) * 1000}
    b = results["builds"]
    base_what = "Debian root filesystem + Ferry runtime layer" if args.fresh_base else "Ferry runtime layer (Debian root filesystem cached)"
    print("| measurement | result |")
    print("| --- | --- |")
    print(f"| cold start, sandbox runtime (p50 / max of {args.cold_n}) | "
          f"{results['sandbox']['cold_p50_ms']:.0f} ms / {results['sandbox']['cold_max_ms']:.0f} ms |")
    print(f"| cold start, sandbox runtime, Python 3.13 image (p50 / max of {args.cold_n}) | "
          f"{results['sandbox313']['cold_p50_ms']:.0f} ms / {results['sandbox313']['cold_max_ms']:.0f} ms |")
    print(f"| cold start, process runtime (p50 / max of {args.cold_n}) | "
          f"{results['process']['cold_p50_ms']:.0f} ms / {results['process']['cold_max_ms']:.0f} ms |")
    print(f"| first build of `debian_slim()`: {base_what} | {b['debian_slim_s']:.1f} s |")
    print(f"| first build of a `pip_install({', '.join(PIP_PACKAGES)})` layer | {b['pip_layer_s']:.1f} s |")
    print(f"| unchanged image, no-op build (p50 of 20) | {b['noop_ms']:.1f} ms |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
