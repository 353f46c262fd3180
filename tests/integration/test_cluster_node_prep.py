"""Nodes made ready for what they will run when an app starts, under FERRY_NODE_RUNTIME=auto,
and the bound on a sandbox node's cache, on a real Ray cluster of two nodes on this machine
(token auth on, root, bubblewrap and pasta installed):

    head  --num-cpus 4, FERRY_NODE_CACHE_MAX_GB tiny (~1 KB): every entry no container uses is
          evicted when a container starts or ends
    gpu   --num-cpus 1 --num-gpus 1 --resources '{"accelerator_type:T4": 1}'   (a fake T4)

When the app starts, the head (a sandbox node) fetches the layers of the two sandbox images
whose functions fit it, before any call, and the GPU node builds the venv of the T4 function
(a GPU container is a process where its GPUs have no device nodes, as this fake T4 has none;
its log says so): the first calls fetch and build nothing. Then a's container
starts, and b's layer (no container uses it) is evicted; b's call fetches it again and works,
while a's layers, which its running container uses, stay; so do the writable layers of running
containers, and a leftover one of a dead container goes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
import pytest

from .apps import cluster_node_prep
from .ray_cluster import module_cluster

pytest.importorskip("ray")

BASE_ROOTFS_DIR = os.environ.get("FERRY_BASE_ROOTFS_DIR") or "/var/cache/ferry-test"


cluster, ray_server = module_cluster(
    ("head", "--num-cpus", "4"),
    ("gpu", "--num-cpus", "1", "--num-gpus", "1", "--resources", '{"accelerator_type:T4": 1}'),
    prefix="ferry-ray-np-", env={"head": {"FERRY_NODE_CACHE_MAX_GB": "0.000001"}},
    node_runtime="auto", server_env={"FERRY_BASE_ROOTFS_DIR": BASE_ROOTFS_DIR})


def _fetches(cache: Path) -> dict[str, int]:
    """Layer digest -> fetches of it on the node whose cache is `cache` (layers present only)."""
    layers = cache / "layers"
    return {p.stem: len(p.read_text().splitlines()) for p in layers.glob("*.fetches") if (layers / p.stem).is_dir()}


def _step_layer(cache: Path, text: str) -> str:
    """The digest of the unpacked layer on the node whose /etc/which.txt says `text`."""
    (found,) = [p.name for p in (cache / "layers").iterdir()
                if (p / "etc" / "which.txt").is_file() and (p / "etc" / "which.txt").read_text().strip() == text]
    return found


def _until(condition, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_app_start_readies_each_node_for_its_runtime_and_the_layers_cache_is_bounded(ray_server, cluster, capsys):
    head, gpu = cluster.nodes["head"].cache, cluster.nodes["gpu"].cache
    evictions = head / "evictions.log"
    with cluster_node_prep.app.run(show_logs=True):
        # before any call: the head fetched both sandbox images' layers, the GPU node built the venv
        before = _fetches(head)
        layer_a, layer_b = _step_layer(head, "layer-a"), _step_layer(head, "layer-b")
        assert len(before) >= 4 and set(before.values()) == {1}, before  # base, Ferry's layer, a, b: once each
        assert not _fetches(gpu)  # no sandbox function fits it
        venvs = gpu / "images" / "venvs"
        builds = {p.name: p.read_text() for p in venvs.glob("*.builds")}
        assert len(builds) == 1 and all(text.count("\n") == 1 for text in builds.values()), builds
        shown = capsys.readouterr().err
        assert "fetch image layers on node" in shown, shown

        on_t4 = cluster_node_prep.on_t4.remote()  # built ahead: built nothing again
        assert on_t4["six"] == "1.16.0" and on_t4["built"] == "ahead, for a T4", on_t4
        assert {p.name: p.read_text() for p in venvs.glob("*.builds")} == builds

        leftover = head / "sandboxes" / "999999999-ct-of-a-dead-agent"  # (no such pid)
        (leftover / "upper").mkdir(parents=True)
        first = cluster_node_prep.read_a.remote()  # fetched ahead: fetches nothing; its container stays
        assert first["text"] == "layer-a"
        assert _fetches(head)[layer_a] == 1
        # its start evicted what no container uses: b's layer (fetched ahead, not yet used)
        assert _until(lambda: f"evicted layer {layer_b} " in (evictions.read_text() if evictions.exists() else "")), \
            (evictions.read_text() if evictions.exists() else "no evictions")
        assert not (head / "layers" / layer_b).exists() and (head / "layers" / layer_a).is_dir()
        assert not leftover.exists()  # a dead container's writable layer
        running = [p for p in (head / "sandboxes").iterdir() if first["container"] in p.name]
        assert len(running) == 1 and running[0].is_dir()  # a's, running: kept

        second = cluster_node_prep.read_b.remote()  # fetched again, and it works
        assert second["text"] == "layer-b"
        assert _fetches(head)[layer_b] == 2
        assert (head / "layers" / layer_a).is_dir() and running[0].is_dir()  # a's container still runs
        assert f"evicted layer {layer_a} " not in evictions.read_text()
    shown = capsys.readouterr().err
    assert "runs this container as a process: this node has no /dev/nvidia0 for GPU 0 (Ray's id)" in shown, shown
