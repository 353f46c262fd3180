"""Which nodes make an image ready when an app starts (runtimes/ray/prebuild.py), and for which
of its containers: those whose CPUs, memory and GPUs fit a function using the image, with
whether the functions that fit each node ask a GPU (GPU containers run as processes, so such a
node builds the venv even where it runs other containers in sandboxes)."""

from __future__ import annotations

from ferry._gpu import parse_gpu
from ferry.server.runtimes.ray.prebuild import eligible_nodes

GIB = 1024 ** 3
NODES = [
    {"NodeID": "small", "Alive": True, "Resources": {"CPU": 1.0, "memory": 2 * GIB}},
    {"NodeID": "big", "Alive": True, "Resources": {"CPU": 8.0, "memory": 32 * GIB}},
    {"NodeID": "t4", "Alive": True, "Resources": {"CPU": 2.0, "memory": 8 * GIB, "GPU": 1.0,
                                                   "accelerator_type:T4": 1.0}},
    {"NodeID": "dead", "Alive": False, "Resources": {"CPU": 8.0, "memory": 32 * GIB}},
]


def test_every_alive_node_for_gpu_less_containers_without_configs():
    assert eligible_nodes(NODES, None) == {"small": {False}, "big": {False}, "t4": {False}}


def test_each_fitting_node_with_whether_its_functions_ask_a_gpu():
    t4 = parse_gpu("T4").to_dict()  # type: ignore[union-attr]
    configs = [{"cpu": 1.5, "memory": None, "gpu": None}, {"cpu": 0.5, "memory": 1024, "gpu": t4}]
    assert eligible_nodes(NODES, configs) == {"big": {False}, "t4": {False, True}}
    assert eligible_nodes(NODES, [configs[1]]) == {"t4": {True}}
    assert eligible_nodes(NODES, [{"cpu": 16, "memory": None, "gpu": None}]) == {}
