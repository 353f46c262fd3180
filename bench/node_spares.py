"""Cold starts on a sandbox node of the `ray` runtime, without and with spare sandboxes
(runtimes/ray/node_spares.py), in one run:

    python bench/node_spares.py [--starts 8] [--json FILE]

For each of FERRY_SANDBOX_SPARES=0 (every container starts from scratch) and the default (4),
it starts a Ray cluster of one node on this machine (`--num-cpus 2`, the setting in the node's
environment), a Ferry server with FERRY_NODE_RUNTIME=sandbox, and, in one app run, calls a
trivial function once (its image's layers reach the node), then `--starts` times a new
variant of it (`with_options`: a new container each time), measuring call to result. Between
starts it waits until the last container has ended (scaledown_window=2) and 3 s more, so a
spare, when there are spares, is up. Prints a Markdown table; each start says whether its
container came from a spare. Needs root, bubblewrap, pasta and prebuilt bases
(FERRY_BASE_ROOTFS_DIR) or mmdebstrap.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from cluster import start_ferry  # noqa: E402
from tests.integration.ray_cluster import Cluster, free_port  # noqa: E402

from node_spares_app import app, where  # noqa: E402


def measure(spares: int, starts: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="ferry-bench-spares-", dir="/tmp"))
    cluster = Cluster(root=root, address=f"127.0.0.1:{free_port()}", token=secrets.token_hex(32))
    os.environ.update({k: v for k, v in cluster.env().items() if k.startswith("RAY_")})
    server = None
    try:
        cluster.start_node("head", "--num-cpus", "2", head=True, env={"FERRY_SANDBOX_SPARES": str(spares)})
        cluster.wait_for_nodes(1)
        server = start_ferry(root / "ferry-home", cluster, "sandbox")
        samples: list[float] = []
        spared: list[bool] = []
        with app.run(show_logs=False):
            where.remote()
            for i in range(starts):
                time.sleep(2 + 2 + 3)  # the last container's scaledown window, its end, a spare's start
                variant = where.with_options(timeout=600 + i)
                started = time.perf_counter()
                spared.append(variant.remote())
                samples.append(time.perf_counter() - started)
        return {"spares": spares, "samples_s": samples, "from_spare": spared,
                "p50_s": statistics.median(samples), "min_s": min(samples), "max_s": max(samples)}
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(20)
            except Exception:  # noqa: BLE001
                server.kill()
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--starts", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = [measure(0, args.starts), measure(4, args.starts)]
    print("| FERRY_SANDBOX_SPARES | cold start p50 | min | max | from a spare |\n| --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['spares']} | {r['p50_s'] * 1000:.0f} ms | {r['min_s'] * 1000:.0f} ms | {r['max_s'] * 1000:.0f} ms "
              f"| {sum(r['from_spare'])} of {len(r['from_spare'])} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
