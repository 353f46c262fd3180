"""The `ray` runtime on a real Ray cluster of three nodes on this machine (token auth on):

    head  --num-cpus 1
    w1    --num-cpus 2
    gpu   --num-cpus 2 --num-gpus 1 --resources '{"accelerator_type:T4": 1}'   (a fake T4)

Each node has its own ports, temporary directory and FERRY_NODE_CACHE, and none inherits the
control plane's FERRY_* settings. Containers spread over the nodes, a GPU function lands on the
GPU node, a volume written on one node is read on another, and a node killed mid-map loses no
output and repeats none. The cluster is ended by SIGKILL of each node's process group and of
any process whose command line names the cluster's temporary directory; never `ray stop`.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import ferry

from ..conftest import ServerProcess, run_cli
from .apps import cluster_images
from .ray_cluster import Cluster, free_port, module_cluster

pytest.importorskip("ray")

app = ferry.App("test-cluster")
vol = ferry.Volume.from_name("test-cluster-vol", create_if_missing=True)


def _where() -> dict[str, Any]:
    return {"node": os.environ.get("FERRY_NODE_ID"), "cache": os.environ.get("FERRY_NODE_CACHE"),
            "pid": os.getpid(), "gpu": os.environ.get("FERRY_GPU_TYPE"),
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "order": os.environ.get("CUDA_DEVICE_ORDER")}


@app.function(max_containers=3)
def where(delay: float) -> dict[str, Any]:
    time.sleep(delay)
    return _where()


@app.function(gpu="T4")
def on_t4() -> dict[str, Any]:
    return _where()



t4_gate = ferry.Dict.from_name("test-cluster-t4-gate", create_if_missing=True)


@app.function(gpu="T4", max_containers=1, retries=0)
def t4_gated(x: int) -> tuple[int, str | None]:
    """Input 0 at once; the others once the gate is open."""
    deadline = time.monotonic() + 300
    while x > 0 and "open" not in t4_gate and time.monotonic() < deadline:
        time.sleep(0.1)
    return x, os.environ.get("FERRY_NODE_CACHE")


@app.function(cpu=8)
def too_big() -> None:
    return None


@app.function(memory=64)
def allocate(megabytes: int) -> int:
    block = bytearray(megabytes * 1024 * 1024)
    for i in range(0, len(block), 4096):  # touch every page so it is really resident
        block[i] = 1
    return len(block)

@app.function(gpu="B200")
def on_b200() -> None:
    return None


@app.function(max_containers=4, retries=0)
def slow_square(x: int) -> tuple[int, int, str | None]:
    time.sleep(0.25)
    return x, x * x, os.environ.get("FERRY_NODE_CACHE")


@app.cls(max_containers=1)
class Counter:
    @ferry.enter()
    def start(self) -> None:
        self.count = 0

    @ferry.method()
    def add(self, n: int) -> tuple[int, str | None]:
        self.count += n
        return self.count, os.environ.get("FERRY_NODE_ID")

    @ferry.exit()
    def stop(self) -> None:
        ferry.Dict.from_name("test-cluster-exits", create_if_missing=True)["counter"] = self.count


@app.function(volumes={"/data": vol}, max_containers=3)
def write_file(text: str) -> str | None:
    Path("/data/greeting.txt").write_text(text)
    vol.commit()
    return os.environ.get("FERRY_NODE_ID")


@app.function(volumes={"/data": vol}, max_containers=3)
def read_file(delay: float) -> tuple[str | None, str]:
    vol.reload()
    time.sleep(delay)
    return os.environ.get("FERRY_NODE_ID"), Path("/data/greeting.txt").read_text()


@app.function()
@ferry.fastapi_endpoint(method="GET")
def square_web(x: int) -> dict[str, Any]:
    return {"square": x * x, "node": os.environ.get("FERRY_NODE_ID")}


refused = ferry.App("test-cluster-refused-image")


@refused.function(image=ferry.Image.debian_slim().run_commands("touch /should-not-exist"))
def with_commands() -> None:
    return None


# -- the cluster ----------------------------------------------------------------------------
cluster, ray_server = module_cluster(
    ("head", "--num-cpus", "1"), ("w1", "--num-cpus", "2"),
    ("gpu", "--num-cpus", "2", "--num-gpus", "1", "--resources", json.dumps({"accelerator_type:T4": 1})))


def start_ray_server(home: Path, cluster: Cluster, timeout: float = 120,
                     extra_env: dict[str, str] | None = None) -> ServerProcess:
    """A control plane with the ray runtime (ray.init takes seconds on a busy machine); its nodes
    run containers as processes (test_cluster_sandbox.py tests sandbox nodes)."""
    return ServerProcess.start(home, base_env=cluster.env(), args=("--ray-address", cluster.address),
                               extra_env={"FERRY_RUNTIME": "ray", "FERRY_NODE_RUNTIME": "process", **(extra_env or {})},
                               timeout=timeout)


# -- tests ----------------------------------------------------------------------------------
def test_a_bad_or_unreachable_address_fails_the_start_in_one_line(tmp_path):
    for address, expected in (("nonsense", "is not HOST:PORT"), (f"127.0.0.1:{free_port()}", "Cannot reach")):
        result = subprocess.run([sys.executable, "-m", "ferry.server", "--port", "0", "--ray-address", address],
                                env={**os.environ, "FERRY_HOME": str(tmp_path / "home"), "FERRY_WEB_PORT": "0"},
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], result.stderr


def test_containers_spread_over_the_nodes_and_show_theirs(ray_server, cluster):
    with app.run(show_logs=False):
        places = list(where.map([3.0] * 3))
        assert len({p["pid"] for p in places}) == 3
        assert len({p["node"] for p in places}) >= 2, places  # Ray spreads them
        assert all(p["node"] and p["cache"] and p["cache"].startswith(str(cluster.root)) for p in places)
        assert all(p["visible"] is None and p["gpu"] is None for p in places)
        shown = run_cli(["app", "show", app.app_id, "--json"], ray_server)
        assert shown.returncode == 0, shown.stderr
        containers = [c for fn in json.loads(shown.stdout)["functions"] if fn["tag"] == "where"
                      for c in fn["containers"]]
        assert containers and {c["node"] for c in containers} <= {p["node"] for p in places}


def test_a_gpu_function_lands_on_the_node_with_that_gpu(ray_server, cluster):
    with app.run(show_logs=False):
        place = on_t4.remote()
    assert place["cache"] == str(cluster.nodes["gpu"].cache)
    assert place["gpu"] == "T4" and place["visible"] == "0" and place["order"] == "PCI_BUS_ID"


def test_a_sandbox_with_a_gpu_lands_on_the_node_with_that_gpu(ray_server, cluster):
    with app.run(show_logs=False):
        sb = ferry.Sandbox.create("sh", "-c", 'echo "$FERRY_GPU_TYPE $CUDA_VISIBLE_DEVICES $FERRY_NODE_CACHE"',
                                  gpu="T4", app=app, timeout=300)
        sb.wait()
        shown = sb.stdout.read().split()
    assert sb.returncode == 0 and shown == ["T4", "0", str(cluster.nodes["gpu"].cache)]


def test_a_gpu_no_node_has_warns_and_its_calls_fail_fast_naming_the_cluster_gpus(ray_server, capsys):
    with app.run(show_logs=False):
        assert "Warning: on_b200 asks for gpu='B200'" in capsys.readouterr().err
        started = time.monotonic()
        with pytest.raises(ferry.exception.Error) as info:
            on_b200.remote()
        assert time.monotonic() - started < 30
    assert "B200" in str(info.value) and "T4" in str(info.value) and "Ray cluster" in str(info.value)
    assert "its calls fail until a node with such a GPU joins" in ray_server.log.read_text()


def test_more_cpus_than_any_node_has_warns_and_its_calls_fail_fast_naming_the_nodes(ray_server, capsys):
    with app.run(show_logs=False):
        assert "Warning: too_big: no node of the Ray cluster has 8 CPUs" in capsys.readouterr().err
        with pytest.raises(ferry.exception.Error) as info:
            too_big.remote()
    assert "no node of the Ray cluster has 8 CPUs" in str(info.value)
    assert "2 CPUs and" in str(info.value)  # the largest nodes' sizes


def test_memory_limits_are_enforced_on_the_nodes(ray_server):
    with app.run(show_logs=False):
        assert allocate.remote(8) == 8 * 1024 * 1024
        with pytest.raises(ferry.exception.OutOfMemoryError, match="64 MiB"):
            allocate.remote(256)


def test_a_node_with_that_gpu_joining_makes_it_placeable(ray_server, cluster):
    cluster.start_node("b200", "--num-cpus", "1", "--num-gpus", "1",
                       "--resources", json.dumps({"accelerator_type:B200": 1}))
    cluster.wait_for_nodes(4)
    with app.run(show_logs=False):
        assert on_b200.remote() is None  # placed on the new node
    cluster.nodes.pop("b200").kill()


def test_an_image_is_built_once_per_node_and_its_containers_see_it(ray_server, cluster):
    """pip_install + env + workdir: four containers, each held until all four run, so that at
    least two share a node (three nodes); each node built the venv once (its build journal)."""
    cluster_images.barrier.clear()
    with cluster_images.app.run(show_logs=False):
        seen = list(cluster_images.six_on_a_node.map([4] * 4))
    assert len({s["pid"] for s in seen}) == 4, seen
    assert {(s["six"], s["greeting"], s["cwd"]) for s in seen} == {("1.16.0", "from the node's venv", "/tmp")}
    caches = {s["cache"] for s in seen}
    assert len(caches) < 4 and caches <= {str(node.cache) for node in cluster.nodes.values()}
    for prefix in {s["prefix"] for s in seen}:  # <cache>/images/venvs/<key>: keyed as the process runtime
        venv = Path(prefix)
        assert venv.parent.parent.parent in {Path(c) for c in caches}
        builds = venv.with_name(venv.name + ".builds").read_text().splitlines()
        assert len(builds) == 1, builds  # one build per node, however many containers
        assert "six==1.16.0" in venv.with_name(venv.name + ".logs").joinpath("1.log").read_text()


def test_add_local_python_source_and_add_local_file_reach_the_node(ray_server, cluster):
    try:
        with cluster_images.app.run(show_logs=False):
            seen = cluster_images.local_files.remote()
    finally:
        shutil.rmtree(Path(cluster_images.MOUNTED_FILE).parent, ignore_errors=True)
    assert seen["pkgdemo"] == 41 and seen["data"] == "from the copied directory\n"
    assert seen["pkgdemo_file"].startswith(f"{seen['cache']}/mounts/")  # written from blobs, per node


def test_steps_the_process_runtime_refuses_are_refused_at_app_start(ray_server):
    with pytest.raises(ferry.exception.InvalidError, match="run_commands\\(\\) would change the host itself"):
        with refused.run(show_logs=False):
            pass
    assert not Path("/should-not-exist").exists()


def test_calls_and_classes_work(ray_server):
    with app.run(show_logs=False):
        counter = Counter()
        assert counter.add.remote(2)[0] == 2
        total, node = counter.add.remote(3)
        assert total == 5 and node
        assert [r[1] for r in slow_square.map(range(5))] == [0, 1, 4, 9, 16]
    # the app stopped: its containers ran @exit on their nodes
    assert ferry.Dict.from_name("test-cluster-exits", create_if_missing=True).get("counter") == 5


def test_a_web_endpoint_runs_on_a_node(ray_server):
    import httpx

    from ._web import path_url

    with app.run(show_logs=False):
        with httpx.Client(timeout=60) as http:
            reply = http.get(path_url(square_web.get_web_url()), params={"x": 7})
    assert reply.status_code == 200, reply.text
    assert reply.json()["square"] == 49 and reply.json()["node"]


def test_a_volume_committed_on_one_node_is_read_on_another(ray_server):
    with app.run(show_logs=False):
        writer_node = write_file.remote("hello from a node")
        reads = list(read_file.map([4.0] * 3))
    assert all(text == "hello from a node" for _, text in reads)
    assert any(node != writer_node for node, _ in reads), (writer_node, reads)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    return state != "Z"


def test_containers_reach_a_tls_server_and_die_with_it(cluster, tmp_path, monkeypatch):
    """A server that serves TLS: containers on the nodes connect with its pinned fingerprint.
    Then SIGKILL of the server: Ray kills the actors its driver owned, and their containers."""
    server = start_ray_server(tmp_path / "home", cluster, extra_env={"FERRY_TLS": "on"})
    assert server.url.startswith("ferry+tls://")
    killed = False
    try:
        server.use(monkeypatch)
        with app.run(show_logs=False):
            pid = where.remote(0.0)["pid"]
            assert _alive(pid)
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()
            killed = True
            deadline = time.monotonic() + 60
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not _alive(pid), "a container outlived its control plane"
    except ferry.exception.Error:
        if not killed:  # a container that could not reach the server fails here, before the kill
            raise
        # (else: leaving app.run() with its server gone)
    finally:
        server.stop()


def test_a_node_killed_mid_map_loses_no_output_and_repeats_none(ray_server, cluster):
    """Last but one: it kills node w1 (retries=0, so an input lost as a crash would fail the map)."""
    victim = cluster.nodes["w1"]
    seen: list[int] = []
    caches: list[str | None] = []
    killed_at = None
    n = 120
    with app.run(show_logs=False):
        for x, square, cache in slow_square.map(range(n)):
            seen.append(x)
            caches.append(cache)
            assert square == x * x
            if killed_at is None and len(seen) >= 8 and str(victim.cache) in caches:
                killed_at = time.time()  # mid-map, once the node has run some of its inputs
                victim.die()
    assert killed_at is not None, f"no input ran on {victim.name}: {set(caches)}"
    assert seen == list(range(n))  # every output, once, in order
    assert str(victim.cache) not in caches[-30:]  # the rest ran on the other nodes
    # noticed within seconds (the head's health checks: Cluster.env)
    lost = [line for line in ray_server.log.read_text().splitlines() if "lost with node" in line]
    assert lost, "no container was reported lost with its node"
    noticed = datetime.datetime.strptime(lost[0][:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    print(f"node loss noticed {noticed - killed_at:.1f} s after the kill")  # (pytest -s shows it)
    assert noticed - killed_at < 15, noticed - killed_at


def test_queued_gpu_inputs_wait_for_a_node_with_that_gpu_to_join(ray_server, cluster):
    """Last: it kills the T4 node while T4 inputs are queued; they wait rather than fail (a T4
    node was in the cluster), and run on a T4 node that joins."""
    victim = cluster.nodes["gpu"]
    losses = lambda: ray_server.log.read_text().count("lost with node")  # noqa: E731
    before = losses()
    t4_gate.clear()
    with app.run(show_logs=False):
        calls = [t4_gated.spawn(x) for x in range(4)]
        assert calls[0].get(timeout=120) == (0, str(victim.cache))
        victim.die()  # input 1 running there, 2 and 3 queued
        deadline = time.monotonic() + 60
        while losses() == before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert losses() > before, "the T4 container was not reported lost with its node"
        time.sleep(5)  # (longer than the inventory's refresh: queued inputs would have failed by now)
        t4_gate["open"] = True
        cluster.start_node("t4-again", "--num-cpus", "2", "--num-gpus", "1",
                           "--resources", json.dumps({"accelerator_type:T4": 1}))
        cluster.wait_for_nodes(sum(1 for node in cluster.nodes.values() if node.process.poll() is None))
        rest = [call.get(timeout=180) for call in calls[1:]]
    assert rest == [(x, str(cluster.nodes["t4-again"].cache)) for x in (1, 2, 3)]
