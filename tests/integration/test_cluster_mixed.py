"""A cluster whose nodes differ, under FERRY_NODE_RUNTIME=auto, on a real Ray cluster of two
nodes on this machine (token auth on):

    head  root, bubblewrap and pasta installed: sandboxes        --num-cpus 2, 4 GiB
    user  `ray start` under `unshare --user`: not root there      --num-cpus 4, 1 GiB
          (as a node run by an ordinary user is), so processes

Each node's agent gives containers its best runtime: on the user node a container is a process
of the node's user and its log says why, and an image that needs a root filesystem is left out
there with a warning at app start and refused at a container's start naming the node and what
to install, while the head runs the same image in a sandbox.
"""

from __future__ import annotations

import os

import pytest

import ferry

from .apps import cluster_mixed
from .ray_cluster import module_cluster

pytest.importorskip("ray")

BASE_ROOTFS_DIR = os.environ.get("FERRY_BASE_ROOTFS_DIR") or "/var/cache/ferry-test"
GIB = str(1024 ** 3)
OVERFLOW_UID = int(open("/proc/sys/kernel/overflowuid").read())  # root, seen from a user namespace without it

cluster, ray_server = module_cluster(
    ("head", "--num-cpus", "2", "--memory", str(4 * 1024 ** 3)),
    ("user", "--num-cpus", "4", "--memory", GIB),
    prefix="ferry-ray-mx-", node_runtime="auto", wrap={"user": ("unshare", "--user")},
    server_env={"FERRY_BASE_ROOTFS_DIR": BASE_ROOTFS_DIR})


def test_a_node_that_is_not_root_runs_containers_as_processes_and_says_why(ray_server, cluster, capsys):
    with cluster_mixed.app.run(show_logs=True):
        here = cluster_mixed.on_user_node.remote()
    assert here["cache"] == str(cluster.nodes["user"].cache)
    assert here["uid"] == OVERFLOW_UID and here["init"] != "bwrap"  # a process of the node's user
    shown = capsys.readouterr().err
    assert "runs this container as a process: The sandbox runtime needs root" in shown, shown


def test_an_image_that_needs_a_root_filesystem_runs_on_sandbox_nodes_only(ray_server, cluster, capsys):
    with cluster_mixed.app.run(show_logs=True):  # (with the build's progress and warnings)
        warned = capsys.readouterr().err
        assert "cannot run on node" in warned and "its step run_commands" in warned, warned
        on_head = cluster_mixed.step_on_head.remote()
        assert on_head["step"] == "from-a-step" and on_head["init"] == "bwrap"  # in a sandbox: on the head
        with pytest.raises(ferry.exception.Error) as refused:
            cluster_mixed.step_on_user_node.remote()
    assert "cannot run this image: its step run_commands" in str(refused.value), refused.value
    assert "Install bubblewrap and passt on it and run `ray start` there as root" in str(refused.value)
