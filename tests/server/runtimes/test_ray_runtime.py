"""The ray runtime's parts that need no cluster: addresses, what it refuses at app start, the
cluster GPU inventory read from `ray.nodes()`, the resources each container asks Ray for, and
a node's image files.
(tests/integration/test_cluster.py runs it on a real three-node cluster.)"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import pytest

import ferry
from ferry._gpu import GPUOption, GPURequest
from ferry.exception import InvalidError
from ferry.server.runtimes import ContainerSpec, ExitStatus
from ferry.server.runtimes.ray.gpus import ClusterGPUs, read_nodes
from ferry.server.runtimes.ray.node_images import NodeImages, recipe_files
from ferry.server.runtimes.ray.runtime import DEFAULT_CPU, RayRuntime, parse_address


def _node(node_id: str, alive: bool = True, **resources: float) -> dict[str, Any]:
    return {"NodeID": node_id, "Alive": alive, "Resources": {"CPU": 2.0, **resources}}


NODES = [
    _node("head"),
    _node("t4", GPU=1.0, **{"accelerator_type:T4": 1.0}),
    _node("a100", GPU=2.0, **{"accelerator_type:A100-80G": 1.0}),
    _node("dead", alive=False, GPU=8.0, **{"accelerator_type:H100": 1.0}),
]


def test_addresses_are_host_and_port():
    assert parse_address("10.0.0.5:6379") == ("10.0.0.5", 6379)
    assert parse_address("[::1]:6379") == ("::1", 6379)
    for bad in ("nonsense", "host:", ":6379", "host:99999", "host:port"):
        with pytest.raises(InvalidError, match="is not HOST:PORT"):
            parse_address(bad)
    with pytest.raises(InvalidError, match="FERRY_RAY_ADDRESS"):
        RayRuntime("")


def test_the_inventory_is_the_alive_nodes_gpus_in_ferrys_names():
    found = {n.node_id: (n.gpu_type, n.count) for n in read_nodes(NODES)}
    assert found == {"t4": ("T4", 1), "a100": ("A100-80GB", 2)}


def test_allocation_counts_the_clusters_gpus_of_each_type():
    gpus = ClusterGPUs(lambda: NODES)
    t4 = GPURequest([GPUOption("T4")])
    first = gpus.allocate(t4)
    assert first is not None and first[0] == "T4"
    assert gpus.allocate(t4) is None  # the only T4 is held
    assert gpus.satisfiable(t4)      # ...but a node has one: wait, do not fail
    gpus.release(first[1])
    assert gpus.allocate(t4) is not None
    two = gpus.allocate(GPURequest([GPUOption("A100", 2)]))
    assert two is not None and two[0] == "A100-80GB" and len(two[1]) == 2
    assert not gpus.satisfiable(GPURequest([GPUOption("A100", 4)]))  # no node has 4
    assert not gpus.satisfiable(GPURequest([GPUOption("H100")]))     # its node is dead
    assert "1x T4 (0 free)" in gpus.describe() and "Ray cluster" in gpus.describe()
    assert gpus.ray_resource("A100-80GB") == "accelerator_type:A100-80G"


def test_a_node_that_joins_makes_a_request_placeable():
    nodes = [_node("head")]
    gpus = ClusterGPUs(lambda: nodes)
    h100 = GPURequest([GPUOption("H100")])
    assert not gpus.satisfiable(h100)
    nodes.append(_node("new", GPU=1.0, **{"accelerator_type:H100": 1.0}))
    gpus._read_at = float("-inf")  # (refreshed every REFRESH_SECONDS)
    assert gpus.satisfiable(h100)


def test_a_request_whose_node_has_gone_waits_for_another_rather_than_fails():
    nodes = [_node("head"), _node("t4", GPU=1.0, **{"accelerator_type:T4": 1.0})]
    gpus = ClusterGPUs(lambda: nodes)
    t4 = GPURequest([GPUOption("T4")])
    assert gpus.satisfiable(t4)
    nodes[1] = _node("t4", alive=False, GPU=1.0, **{"accelerator_type:T4": 1.0})  # it died
    gpus._read_at = float("-inf")
    assert gpus.allocate(t4) is None and "no GPUs" in gpus.describe()
    assert gpus.satisfiable(t4)  # its inputs wait: a T4 node was here
    assert not gpus.satisfiable(GPURequest([GPUOption("T4", 2)]))  # none ever had two
    nodes.append(_node("t4-again", GPU=1.0, **{"accelerator_type:T4": 1.0}))
    gpus._read_at = float("-inf")
    assert gpus.allocate(t4) is not None


def test_images_are_refused_at_app_start_only_where_the_process_runtime_refuses_them(tmp_path, monkeypatch):
    monkeypatch.setenv("FERRY_NODE_RUNTIME", "process")  # (else sandbox nodes may run every step)
    runtime = RayRuntime("127.0.0.1:6379")
    (tmp_path / "data.txt").write_text("data")
    for image in (ferry.Image.debian_slim(), ferry.Image.debian_slim().pip_install("six").env({"A": "1"}),
                  ferry.Image.debian_slim(python_version="3.12"),
                  ferry.Image.debian_slim().add_local_file(tmp_path / "data.txt", "/srv/data.txt")):
        runtime.check_function("f", {"image": image._wire().definition})  # built on the nodes
    runtime.check_function("f", {})
    commands = ferry.Image.debian_slim().run_commands("touch /x")._wire().definition
    with pytest.raises(InvalidError, match=r"f: Image.run_commands\(\) would change the host itself"):
        runtime.check_function("f", {"image": commands})
    with pytest.raises(InvalidError, match="run_commands"):  # with_options(image=)
        runtime.check_function("f", {"config": {"image": commands}})
    copied = ferry.Image.debian_slim().add_local_file(tmp_path / "data.txt", "/srv/data.txt", copy=True)
    with pytest.raises(InvalidError, match="cannot place files at a path of an image"):
        runtime.check_function("f", {"image": copied._wire().definition})
    for setting in ("auto", "sandbox"):  # a sandbox node runs them (a process node refuses at its start)
        monkeypatch.setenv("FERRY_NODE_RUNTIME", setting)
        for image in (commands, copied._wire().definition):
            runtime.check_function("f", {"image": image})


def _local_files(*roots: Path) -> dict[str, bytes]:
    files = [p for root in roots for p in ([root] if root.is_file() else root.rglob("*")) if p.is_file()]
    return {hashlib.sha256(p.read_bytes()).hexdigest(): p.read_bytes() for p in files}


def test_a_node_writes_an_images_files_from_blobs_it_was_sent(tmp_path, monkeypatch):
    """The node side of image files: what it lacks, what it keeps (checked), what a container
    of the image gets (python sources on PYTHONPATH, a file bound read-only at its path)."""
    files = Path(__file__).resolve().parents[2] / "integration" / "apps" / "image_files"
    monkeypatch.syspath_prepend(str(files))  # add_local_python_source("pkgdemo")
    target = tmp_path / "mounted" / "data.txt"
    image = ferry.Image.debian_slim().add_local_python_source("pkgdemo").add_local_file(files / "data.txt", str(target))
    wire = image._wire().definition
    node = NodeImages(tmp_path / "cache")
    missing = node.missing(wire)
    assert set(missing) == recipe_files(wire) and missing
    with pytest.raises(InvalidError, match="not sent to node"):
        node.prepare(wire, 60, "node test")
    with pytest.raises(InvalidError, match="does not match its digest"):
        node.put({missing[0]: b"something else"})
    sent = _local_files(files / "pkgdemo", files / "data.txt")
    node.put({digest: sent[digest] for digest in missing})
    assert node.missing(wire) == []
    prepared = node.prepare(wire, 60, "node test")
    assert prepared.python == sys.executable and not prepared.built  # a plain image: no venv
    (source,) = prepared.pythonpath
    assert (Path(source) / "pkgdemo" / "__init__.py").read_text() == (files / "pkgdemo" / "__init__.py").read_text()
    assert Path(source).parent == tmp_path / "cache" / "mounts"
    ((host, inside, read_only),) = prepared.binds
    assert host.read_text() == (files / "data.txt").read_text() and inside == str(target) and read_only
    assert target.is_file() and target.read_text() == ""  # the mount point, created empty on the node


def test_each_container_asks_ray_for_its_resources():
    runtime = RayRuntime("127.0.0.1:6379")
    runtime.gpus = ClusterGPUs(lambda: NODES)
    plain = runtime._options(ContainerSpec(container_id="ct-1", function_id="fu", server_url="x"))
    assert plain["num_cpus"] == DEFAULT_CPU and "num_gpus" not in plain and "memory" not in plain
    assert plain["max_restarts"] == 0
    gpu = runtime._options(ContainerSpec(container_id="ct-2", function_id="fu", server_url="x", cpu=2.0,
                                         memory_mb=512, gpu_type="T4", gpu_indices=(7,)))
    assert gpu["num_cpus"] == 2.0 and gpu["memory"] == 512 * 1024 * 1024 and gpu["num_gpus"] == 1
    assert gpu["resources"] == {"accelerator_type:T4": 0.001}
    with pytest.raises(InvalidError, match="block_network"):
        runtime.check(ContainerSpec(container_id="ct-3", function_id="fu", server_url="x", block_network=True))


def test_a_lost_node_is_said_so():
    assert ExitStatus(code=None, node_lost=True).describe() == "was lost with its node"
