"""The ray runtime's parts that need no cluster: addresses, what it refuses at app start, the
cluster GPU inventory read from `ray.nodes()`, and the resources each container asks Ray for.
(tests/integration/test_cluster.py runs it on a real three-node cluster.)"""

from __future__ import annotations

from typing import Any

import pytest

import ferry
from ferry._gpu import GPUOption, GPURequest
from ferry.exception import InvalidError
from ferry.server.runtimes import ContainerSpec, ExitStatus
from ferry.server.runtimes.ray.gpus import ClusterGPUs, read_nodes
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


def test_images_with_build_steps_or_local_files_are_refused_at_app_start():
    runtime = RayRuntime("127.0.0.1:6379")
    plain = {"image": ferry.Image.debian_slim()._wire().definition}
    runtime.check_function("f", plain)
    runtime.check_function("f", {})
    with pytest.raises(NotImplementedError, match="does not build images on cluster nodes"):
        runtime.check_function("f", {"image": ferry.Image.debian_slim().pip_install("six")._wire().definition})
    with pytest.raises(NotImplementedError, match="does not build images on cluster nodes"):
        runtime.check_function("f", {"image": ferry.Image.debian_slim(python_version="3.12")._wire().definition})
    with pytest.raises(NotImplementedError, match="does not build images on cluster nodes"):  # with_options(image=)
        runtime.check_function("f", {"config": {"image": ferry.Image.debian_slim().pip_install("six")._wire().definition}})
    # a FastAPI endpoint of the bare image: the client adds FastAPI, nodes run Ferry's own Python
    runtime.check_function("f", {"image": ferry.Image.debian_slim().pip_install("fastapi")._wire().definition,
                                 "image_for_process_runtime": plain["image"]})
    with pytest.raises(NotImplementedError, match="add_local"):
        runtime.check_function("f", {"image": {**plain["image"], "mounts": [{"kind": "python"}]}})


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
