"""Ferry's ray runtime next to plain Ray tasks, on a Ray cluster of 1 and then 3 nodes started
on this machine, in one run:

    python bench/cluster.py [--quick] [--json bench/results/cluster.json] [--node-runtime process]

  map      10,000 trivial inputs (Ferry: .map over 4 containers; Ray: 10,000 tasks)
  burst    200 inputs that each sleep 1 s (Ferry: up to 24 containers of 0.25 CPU; Ray: tasks of
           0.25 CPU), wall time until all are done
  warm     round trip of a trivial call to a container (Ray: an actor) on a worker node, not
           the head where the control plane (the driver) runs: p50 / p99

Every node has --num-cpus 2, so one node fits 8 containers of 0.25 CPU and three fit 24. All
nodes share this machine's cores: three nodes add slots, not CPU, and the numbers say what
the runtime costs, not how a real cluster scales. Nodes run containers as processes
(FERRY_NODE_RUNTIME=process) unless --node-runtime says otherwise. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from tests.integration.ray_cluster import Cluster, free_port  # noqa: E402


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": statistics.median(ordered) * 1000,
            "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000}


def start_ferry(home: Path, cluster: Cluster, node_runtime: str = "process") -> subprocess.Popen:
    home.mkdir(parents=True, exist_ok=True)
    env = {**cluster.env(), "FERRY_HOME": str(home), "FERRY_WEB_PORT": "0", "FERRY_NODE_RUNTIME": node_runtime}
    if os.environ.get("FERRY_BASE_ROOTFS_DIR"):  # prebuilt Debian bases for sandbox nodes' images
        env["FERRY_BASE_ROOTFS_DIR"] = os.environ["FERRY_BASE_ROOTFS_DIR"]
    process = subprocess.Popen([sys.executable, "-m", "ferry.server", "--port", "0", "--ray-address", cluster.address],
                               env=env, stdout=open(home / "server.log", "ab"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            state = json.loads((home / "server.json").read_text())
            if state["pid"] == process.pid:
                os.environ["FERRY_SERVER_URL"] = state["url"]
                os.environ["FERRY_HOME"] = str(home)
                return process
        except (OSError, ValueError, KeyError):
            pass
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError((home / "server.log").read_text())


def bench_ferry(n_map: int, n_burst: int, n_warm: int, remote: bool) -> dict[str, Any]:
    import cluster_app

    out: dict[str, Any] = {}
    # one app run per workload: idle containers hold their Ray resources (cpu) until they end,
    # so the map's containers would otherwise take slots from the burst's
    with cluster_app.app.run(show_logs=False):
        list(cluster_app.trivial.map(range(100)))  # containers up
        started = time.perf_counter()
        assert len(list(cluster_app.trivial.map(range(n_map)))) == n_map
        out["map_per_s"] = n_map / (time.perf_counter() - started)
    with cluster_app.app.run(show_logs=False):
        started = time.perf_counter()
        assert len(list(cluster_app.one_second.map(range(n_burst)))) == n_burst
        out["burst_s"] = time.perf_counter() - started
        shown = subprocess.run([sys.executable, "-m", "ferry", "app", "show", cluster_app.app.app_id, "--json"],
                               capture_output=True, text=True, check=True)
        stats = next(f["stats"] for f in json.loads(shown.stdout)["functions"] if f["tag"] == "one_second")
        # from the decision to start a container to its being ready: Ray's placement, the actor's
        # worker process, the container process, its import of the code
        out["burst_containers"] = stats["containers_started"]
        out["burst_start_mean_s"] = stats["boot_mean"]
    if remote:
        with cluster_app.app.run(show_logs=False):
            cluster_app.remote_trivial.remote(0)
            samples = []
            for i in range(n_warm):
                t = time.perf_counter()
                cluster_app.remote_trivial.remote(i)
                samples.append(time.perf_counter() - t)
            out["warm"] = percentiles(samples)
    return out


def bench_ray(address: str, n_map: int, n_burst: int, n_warm: int, remote: bool) -> dict[str, Any]:
    import ray

    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        @ray.remote(num_cpus=0.25)
        def trivial(x: int) -> int:
            return x + 1

        @ray.remote(num_cpus=0.25)
        def one_second(x: int) -> int:
            time.sleep(1.0)
            return x

        @ray.remote(num_cpus=0.25, resources={"accelerator_type:T4": 0.001})
        class Remote:
            def trivial(self, x: int) -> int:
                return x + 1

        out: dict[str, Any] = {}
        ray.get([trivial.remote(i) for i in range(100)])
        started = time.perf_counter()
        ray.get([trivial.remote(i) for i in range(n_map)])
        out["map_per_s"] = n_map / (time.perf_counter() - started)
        started = time.perf_counter()
        ray.get([one_second.remote(i) for i in range(n_burst)])
        out["burst_s"] = time.perf_counter() - started
        if remote:
            actor = Remote.remote()
            ray.get(actor.trivial.remote(0))
            samples = []
            for i in range(n_warm):
                t = time.perf_counter()
                ray.get(actor.trivial.remote(i))
                samples.append(time.perf_counter() - t)
            out["warm"] = percentiles(samples)
        return out
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller workloads (a smoke run)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--node-runtime", choices=("process", "sandbox", "auto"), default="process",
                        help="how the nodes run containers (FERRY_NODE_RUNTIME)")
    args = parser.parse_args()
    n_map, n_burst, n_warm = (1000, 40, 50) if args.quick else (10_000, 200, 300)
    root = Path(tempfile.mkdtemp(prefix="ferry-bench-ray-", dir="/tmp"))
    cluster = Cluster(root=root, address=f"127.0.0.1:{free_port()}", token=secrets.token_hex(32))
    os.environ.update({k: v for k, v in cluster.env().items() if k.startswith("RAY_")})
    results: dict[str, Any] = {}
    server = None
    try:
        cluster.start_node("head", "--num-cpus", "2", head=True)
        cluster.wait_for_nodes(1)
        server = start_ferry(root / "ferry-home", cluster, args.node_runtime)
        results["1 node"] = {"ferry": bench_ferry(n_map, n_burst, n_warm, remote=False),
                             "ray": bench_ray(cluster.address, n_map, n_burst, n_warm, remote=False)}
        cluster.start_node("w1", "--num-cpus", "2")
        cluster.wait_for_nodes(2)
        cluster.start_node("gpu", "--num-cpus", "2", "--num-gpus", "1", "--resources", '{"accelerator_type:T4": 1}')
        cluster.wait_for_nodes(3)
        results["3 nodes"] = {"ferry": bench_ferry(n_map, n_burst, n_warm, remote=True),
                              "ray": bench_ray(cluster.address, n_map, n_burst, n_warm, remote=True)}
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    print("| what | Ferry 1 node | Ray 1 node | Ferry 3 nodes | Ray 3 nodes |\n| --- | --- | --- | --- | --- |")
    one, three = results["1 node"], results.get("3 nodes", {"ferry": {}, "ray": {}})
    print(f"| map of {n_map:,} trivial inputs | {one['ferry']['map_per_s']:,.0f}/s | {one['ray']['map_per_s']:,.0f}/s "
          f"| {three['ferry'].get('map_per_s', 0):,.0f}/s | {three['ray'].get('map_per_s', 0):,.0f}/s |")
    print(f"| burst of {n_burst} 1-s inputs | {one['ferry']['burst_s']:.1f} s | {one['ray']['burst_s']:.1f} s "
          f"| {three['ferry'].get('burst_s', 0):.1f} s | {three['ray'].get('burst_s', 0):.1f} s |")
    print(f"| Ferry containers of the burst, mean start | {one['ferry']['burst_containers']}, "
          f"{one['ferry']['burst_start_mean_s']:.1f} s | - | {three['ferry'].get('burst_containers')}, "
          f"{three['ferry'].get('burst_start_mean_s') or 0:.1f} s | - |")
    if "warm" in three["ferry"]:
        f, r = three["ferry"]["warm"], three["ray"]["warm"]
        print(f"| warm call to another node, p50 / p99 | - | - | {f['p50_ms']:.2f} / {f['p99_ms']:.2f} ms "
              f"| {r['p50_ms']:.2f} / {r['p99_ms']:.2f} ms (actor) |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
