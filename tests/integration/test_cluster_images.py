"""Images built on the nodes of a real Ray cluster when the app starts (runtimes/ray/
prebuild.py), before any call: three nodes on this machine, as tests/integration/test_cluster.py
starts them (token auth on, each node its own FERRY_NODE_CACHE):

    head  --num-cpus 1
    w1    --num-cpus 2
    gpu   --num-cpus 2 --num-gpus 1 --resources '{"accelerator_type:T4": 1}'   (a fake T4)

Each node whose resources fit a function builds its image when the app starts (its cache holds
the venv and one line in its `.builds` journal before any call), and the first call builds
nothing again; a failing step fails the app's start with the step's output; a node that dies
while it builds is left out with a warning instead of holding the start; `ferry image build`
builds on every node (`--force`: once more).
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

import ferry

from ..conftest import run_cli
from .apps import cluster_prebuild
from .test_cluster import cluster, ray_server  # noqa: F401 - module-scoped: this module's own cluster and server

pytest.importorskip("ray")


def _builds(cache: Path) -> dict[str, int]:
    """Venv key -> builds of it on the node whose cache is `cache` (complete venvs only)."""
    venvs = cache / "images" / "venvs"
    return {p.name[:-len(".builds")]: len(p.read_text().splitlines()) for p in venvs.glob("*.builds")
            if (venvs / p.name[:-len(".builds")] / ".ferry-complete").is_file()}


def test_app_start_builds_each_image_on_the_nodes_that_fit_it_before_any_call(ray_server, cluster, capsys):
    with cluster_prebuild.ahead.run(show_logs=True):  # (and the builds' progress)
        before = {name: _builds(node.cache) for name, node in cluster.nodes.items()}
        seen = cluster_prebuild.where_ahead.remote()
        on_t4 = cluster_prebuild.where_on_t4.remote()
        after = {name: _builds(node.cache) for name, node in cluster.nodes.items()}
    shown = capsys.readouterr().err
    key, t4_key = Path(seen["prefix"]).name, Path(on_t4["prefix"]).name
    assert key != t4_key and seen["six"] == on_t4["six"] == "1.16.0", (seen, on_t4)
    assert all(before[name].get(key) == 1 for name in ("head", "w1", "gpu")), before  # every node fits it
    assert before["gpu"].get(t4_key) == 1 and all(t4_key not in before[n] for n in ("head", "w1")), before
    assert after == before, (before, after)  # the first calls built nothing again
    assert on_t4["cache"] == str(cluster.nodes["gpu"].cache)
    # the client showed each node's build as it does a local one
    for name in ("head", "w1", "gpu"):
        node_id = _node_id_of(cluster.nodes[name].cache, key)
        assert f"pip_install six==1.16.0 on node {node_id[:8]}" in shown, shown
    # the app started again: the control plane knows each node has its images, and asks none
    with cluster_prebuild.ahead.run(show_logs=True):
        assert cluster_prebuild.where_ahead.remote()["six"] == "1.16.0"
    assert " on node " not in capsys.readouterr().err
    assert {name: _builds(node.cache) for name, node in cluster.nodes.items()} == after


def _node_id_of(cache: Path, key: str) -> str:
    """The Ray node id a node's build journal names ("... node <id>")."""
    line = (cache / "images" / "venvs" / f"{key}.builds").read_text().splitlines()[0]
    return line.rsplit(" ", 1)[-1]


def test_a_failing_step_fails_the_app_start_with_its_output(ray_server, capsys):
    with pytest.raises(ferry.exception.ExecutionError) as info:
        with cluster_prebuild.failing.run(show_logs=True):  # (and the builds' progress)
            pytest.fail("the app started although its image could not be built")
    message = str(info.value)
    assert "Image build failed at step 2/2" in message and "exit code 1" in message, message
    assert "--no-index" in message and "six" in message.split("last lines of output:")[1], message
    assert ".logs/1.log on node " in message, message
    shown = capsys.readouterr().err
    assert "✗" in shown and "Full output: $FERRY_NODE_CACHE/images/venvs/" in shown, shown


def test_a_node_that_dies_while_it_builds_does_not_hold_the_start(ray_server, cluster, capsys):
    """A fourth node whose package index never answers (its pip waits): it dies once its build
    started; the app starts without it, warning, and its calls run on the other nodes."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # connections complete, nothing is ever read or answered
    try:
        cluster.start_node("doomed", "--num-cpus", "1", env={
            "PIP_INDEX_URL": f"http://127.0.0.1:{silent.getsockname()[1]}/simple", "PIP_DEFAULT_TIMEOUT": "600"})
        cluster.wait_for_nodes(4)
        doomed = cluster.nodes["doomed"]
        venvs = doomed.cache / "images" / "venvs"
        building = threading.Event()

        def kill_once_building() -> None:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not any(venvs.glob("*.logs")):
                time.sleep(0.2)
            building.set()
            doomed.die()

        killer = threading.Thread(target=kill_once_building, daemon=True)
        killer.start()
        with cluster_prebuild.ahead.run(show_logs=True):  # (and the builds' progress and warnings)
            assert building.is_set()
            seen = cluster_prebuild.where_ahead.remote()
        killer.join()
    finally:
        silent.close()
        cluster.nodes.pop("doomed").kill()
    assert seen["cache"] != str(doomed.cache) and seen["six"] == "1.16.0"
    log = ray_server.log.read_text()
    assert "was not built ahead on node" in log and "the node was lost while building" in log, log[-3000:]
    shown = capsys.readouterr().err
    assert "Warning: Image " in shown and "was not built ahead on node" in shown, shown[-3000:]


def test_ferry_image_build_builds_on_every_node_and_force_builds_again(ray_server, cluster):
    ref = f"{cluster_prebuild.__file__}::cli_image"
    before = {name: set(_builds(node.cache)) for name, node in cluster.nodes.items()}
    built = run_cli(["image", "build", ref], ray_server, timeout=600)
    assert built.returncode == 0, built.stderr
    new = {name: set(_builds(node.cache)) - before[name] for name, node in cluster.nodes.items()}
    (key,) = new["head"]
    assert all(keys == {key} for keys in new.values()), new  # every alive node built it, once
    assert "pip_install six==1.16.0 on node" in built.stderr, built.stderr
    forced = run_cli(["image", "build", "--force", ref], ray_server, timeout=600)
    assert forced.returncode == 0, forced.stderr
    assert all(_builds(node.cache)[key] == 2 for node in cluster.nodes.values())  # --force: every node again
