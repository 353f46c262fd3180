"""How the `ray` runtime starts containers without a GPU, on a real Ray cluster of two nodes on
this machine (token auth on): each holds its resources in a placement group of its own, which
Ray accounts and places, and the one agent of its node runs it (node_agent.py), forked from
the agent's zygote, so that a second container on a node starts without a new Ray worker or
interpreter; a container still never outlives the agent that started it. Nodes run containers as processes here (FERRY_NODE_RUNTIME=process).
(tests/integration/test_cluster.py covers the rest of the runtime.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import ferry

from .ray_cluster import Cluster, module_cluster

pytest.importorskip("ray")

app = ferry.App("test-cluster-starts")


def _command(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[1])


def _here() -> dict[str, Any]:
    parent = os.getppid()
    return {"node": os.environ.get("FERRY_NODE_ID"), "container": os.environ.get("FERRY_CONTAINER_ID"),
            "pid": os.getpid(), "parent": parent, "parent_cmd": _command(parent),
            "agent": _parent(parent), "agent_cmd": _command(_parent(parent))}


barrier = ferry.Dict.from_name("test-cluster-starts-barrier", create_if_missing=True)


@app.function(max_containers=3)
def here(containers: int) -> dict[str, Any]:
    """Holds its container until `containers` of them run (so that each input gets its own)."""
    barrier[os.getpid()] = True
    deadline = time.monotonic() + 300
    while barrier.len() < containers and time.monotonic() < deadline:
        time.sleep(0.2)
    return _here()


cluster, ray_server = module_cluster(("head", "--num-cpus", "2"), ("w1", "--num-cpus", "2"), prefix="ferry-rays-")


def _placement_groups(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """The cluster's placement groups by name: {state, bundles}, asked through a Ray client."""
    script = ("import json, sys, ray; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False); "
              "print(json.dumps({g['name']: {'state': g['state'], 'bundles': list(g['bundles'].values())} "
              "for g in ray.util.placement_group_table().values()}))")
    result = subprocess.run([sys.executable, "-c", script, cluster.address], env=cluster.env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"


def test_containers_hold_placement_groups_and_share_their_nodes_agent(ray_server, cluster):
    barrier.clear()
    with app.run(show_logs=False):
        seen = list(here.map([3] * 3))
        assert len({s["pid"] for s in seen}) == 3, seen
        # each container's resources: a placement group of its own, placed and held while it runs
        groups = _placement_groups(cluster)
        for s in seen:
            assert groups[s["container"]] == {"state": "CREATED", "bundles": [{"CPU": 0.25}]}, groups
    # forked from the zygote of the agent of its node: one Ray worker and one zygote per node,
    # not a worker and an interpreter start per container
    assert all("ferry.server.runtimes.zygote_process" in s["parent_cmd"] for s in seen), seen
    assert all(s["agent_cmd"].startswith("ray::NodeAgent") for s in seen), seen
    zygotes = {s["node"]: s["parent"] for s in seen}
    assert all(zygotes[s["node"]] == s["parent"] for s in seen), seen
    assert len(zygotes) < len(seen)  # three containers on two nodes: a second one on some node
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the app stopped: its containers' groups go with them
        groups = _placement_groups(cluster)
        if all(groups[s["container"]]["state"] == "REMOVED" for s in seen):
            break
        time.sleep(1)
    assert all(groups[s["container"]]["state"] == "REMOVED" for s in seen), groups


def test_a_container_dies_with_its_nodes_agent_and_the_node_gets_a_new_one(ray_server):
    barrier.clear()
    with app.run(show_logs=False):
        first = here.remote(0)
        assert first["agent_cmd"].startswith("ray::NodeAgent") and _alive(first["pid"])
        os.kill(first["agent"], signal.SIGKILL)  # the agent's worker dies (as if Ray's worker crashed)
        deadline = time.monotonic() + 60
        while (_alive(first["pid"]) or _alive(first["parent"])) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(first["parent"]), "a zygote outlived its node's agent"
        assert not _alive(first["pid"]), "a container outlived its node's agent"
        after = here.remote(0)  # the lost container is replaced; its node's agent too
        assert after["pid"] != first["pid"] and after["agent"] != first["agent"]
        assert after["agent_cmd"].startswith("ray::NodeAgent")
