"""Sandbox nodes of the `ray` runtime, on a real Ray cluster of one node on this machine (token
auth on, root, bubblewrap and pasta installed), with FERRY_NODE_RUNTIME=sandbox: containers
run in sandboxes over their image's layers, which the control plane builds and the node fetches
into its own cache (FERRY_NODE_CACHE; nothing of the control plane's FERRY_HOME). A function
runs in namespaces of its own, cannot reach the node's loopback, and writes files as the
shifted root; a run_commands image works; a second container of an image fetches nothing; a
volume's commits reach the next container; memory= is enforced; block_network leaves loopback
only; a stopped container runs its @exit hooks; a TLS control plane is reached through the
agent; a container dies with its node's agent; a ferry.Sandbox runs in a sandbox on the node. The cluster is ended by SIGKILL of what it started
(tests/integration/ray_cluster.py); never `ray stop`.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import time
from pathlib import Path

import pytest

import ferry

from ..conftest import ServerProcess
from .apps.cluster_sandbox import (Counter, allocate, app, inside, interfaces, interfaces_blocked, linger, seen, step_output,
                                   write_and_read)
from .ray_cluster import Cluster, free_port, module_cluster

pytest.importorskip("ray")

SHIFTED_ROOT = 1_000_000_000  # host uid of root inside sandboxes (runtimes/sandbox/ids.py)
BASE_ROOTFS_DIR = os.environ.get("FERRY_BASE_ROOTFS_DIR") or "/var/cache/ferry-test"


cluster, ray_server = module_cluster(("head", "--num-cpus", "2"), prefix="ferry-ray-sb-", node_runtime="sandbox",
                                     server_env={"FERRY_BASE_ROOTFS_DIR": BASE_ROOTFS_DIR})


def _layers(cluster: Cluster) -> Path:
    return cluster.nodes["head"].cache / "layers"


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[1])


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _host_pid(process: dict) -> int:
    """The host pid of a container's Python, by its PID namespace and its pid there (`linger`
    says them; a container that was a spare sandbox shows its environment nowhere in /proc)."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "ns" / "pid") == process["pidns"] \
                    and (entry / "status").read_text().split("NSpid:")[1].splitlines()[0].split()[-1] \
                    == str(process["pid"]):
                return int(entry.name)
        except (OSError, IndexError):
            continue
    raise AssertionError(f"no process of container {process['container']} on this machine")


def test_a_function_on_a_sandbox_node_runs_in_namespaces_of_its_own(ray_server, cluster):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    marker = f"marker-{secrets.token_hex(4)}"
    try:
        with app.run(show_logs=False):
            got = inside.remote(listener.getsockname()[1], marker)
            # its writable layer, on the node, while it runs: the file belongs to the shifted root
            written = list((cluster.nodes["head"].cache / "sandboxes").glob(f"*/upper/root/{marker}"))
            assert len(written) == 1, written
            assert (written[0].stat().st_uid, written[0].stat().st_gid) == (SHIFTED_ROOT, SHIFTED_ROOT)
            assert written[0].read_text() == "written inside"
        with pytest.raises(BlockingIOError):  # nothing came in from the container
            listener.accept()
    finally:
        listener.close()
    assert got["node"] and got["container"]
    for name, namespace in got["namespaces"].items():  # none is the node's (the agent's, this machine's)
        assert namespace != os.readlink(f"/proc/self/ns/{name}"), name
    assert got["uid"] == 0 and os.path.basename(got["pid1"]) == "bwrap" and got["pid"] < 10
    assert got["loopback"] == "ConnectionRefusedError"  # its own loopback, not the node's
    assert got["url"] == "ferry+unix:///run/ferry/control.sock"  # its agent's relay


def test_a_run_commands_image_runs_and_a_second_container_fetches_nothing(ray_server, cluster):
    with app.run(show_logs=False):
        first = step_output.remote()
    assert first["text"] == "built-by-a-step"
    fetched = {path.name: path.read_text() for path in _layers(cluster).glob("*.fetches")}
    # the Debian base, Ferry's runtime layer and the run_commands step, each fetched once
    assert len(fetched) >= 3 and all(text.count("\n") == 1 for text in fetched.values()), fetched
    assert all((_layers(cluster) / name.removesuffix(".fetches")).is_dir() for name in fetched)
    with app.run(show_logs=False):
        second = step_output.remote()
    assert second["text"] == "built-by-a-step" and second["container"] != first["container"]
    assert {path.name: path.read_text() for path in _layers(cluster).glob("*.fetches")} == fetched
    assert not list((_layers(cluster) / ".incoming").glob("*.part"))


def test_a_volume_written_in_one_sandbox_container_is_read_in_the_next(ray_server):
    with app.run(show_logs=False):
        first = write_and_read.remote("from the first container")
    with app.run(show_logs=False):
        second = write_and_read.remote("from the second container")
    assert second["previous"] == "from the first container" and second["container"] != first["container"]


def test_a_sandbox_has_pastas_network_or_with_block_network_only_loopback(ray_server):
    with app.run(show_logs=False):
        assert interfaces_blocked.remote() == ["lo"]
        assert len(interfaces.remote()) > 1  # loopback and the node's interface, through pasta


def test_memory_limits_are_enforced_in_sandboxes_on_the_nodes(ray_server):
    with app.run(show_logs=False):
        assert allocate.remote(8) == 8 * 1024 * 1024
        with pytest.raises(ferry.exception.OutOfMemoryError, match="96 MiB"):
            allocate.remote(300)


def test_a_stopped_sandbox_container_runs_its_exit_hook(ray_server):
    token = secrets.token_hex(4)
    with app.run(show_logs=False):
        counter = Counter()
        assert [counter.add.remote(token) for _ in range(2)] == [1, 2]
    deadline = time.monotonic() + 60  # (the hook writes through the control plane as it stops)
    while f"exit-{token}" not in seen and time.monotonic() < deadline:
        time.sleep(0.2)
    assert seen[f"exit-{token}"] == 2


def test_a_sandbox_reaches_a_tls_control_plane_through_its_agent(cluster, tmp_path, monkeypatch):
    """The container speaks TLS over its Unix socket, end to end (the agent carries bytes)."""
    server = ServerProcess.start(
        tmp_path / "home", base_env=cluster.env(), args=("--ray-address", cluster.address),
        extra_env={"FERRY_RUNTIME": "ray", "FERRY_NODE_RUNTIME": "sandbox", "FERRY_TLS": "on",
                   "FERRY_BASE_ROOTFS_DIR": BASE_ROOTFS_DIR}, timeout=120)
    try:
        assert server.url.startswith("ferry+tls://")
        server.use(monkeypatch)
        with app.run(show_logs=False):
            assert step_output.remote()["text"] == "built-by-a-step"
            assert inside.remote(free_port(), "tls-marker")["url"] == "ferry+tls+unix:///run/ferry/control.sock"
    finally:
        server.stop()


def test_a_container_dies_with_its_agent(ray_server, cluster):
    """Last: it kills the node's agent (the next container on the node gets a new one)."""
    token = secrets.token_hex(4)
    try:
        with app.run(show_logs=False):
            linger.spawn(token, 600.0)
            deadline = time.monotonic() + 300
            while token not in seen and time.monotonic() < deadline:
                time.sleep(0.2)
            pid = _host_pid(seen[token])
            init = _parent(pid)   # pid 1 inside: bwrap's init
            bwrap = _parent(init)  # the launcher, exec'd into bwrap
            agent = _parent(bwrap)
            assert Path(f"/proc/{bwrap}/comm").read_text().strip() == "bwrap"
            assert re.match(rb"ray::(Node|Container)Agent", Path(f"/proc/{agent}/cmdline").read_bytes())
            os.kill(agent, signal.SIGKILL)
            deadline = time.monotonic() + 60
            while (_alive(pid) or _alive(bwrap)) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not _alive(pid) and not _alive(bwrap), "a sandboxed container outlived its agent"
            # its writable layer (and its node's spares'), named for the agent, which could not remove them
            scratches = list((cluster.nodes["head"].cache / "sandboxes").glob(f"{agent}-*"))
            assert scratches
            assert step_output.remote()["text"] == "built-by-a-step"  # a new agent, whose first start removes them
            assert not any(path.exists() for path in scratches)
    except ferry.exception.Error:
        pass  # (the spawned call, lost with its container)


def test_a_ferry_sandbox_runs_in_a_sandbox_on_the_node(ray_server, cluster):
    """ferry.Sandbox on a sandbox node: its commands run in the node's sandbox (pid 1 bwrap,
    namespaces of its own), and it ends when terminated."""
    with app.run(show_logs=False):
        sb = ferry.Sandbox.create(app=app, timeout=300)
        try:
            p = sb.exec("python3", "-c", "import os; print(os.environ['FERRY_NODE_ID'], "
                                         "os.path.basename(os.readlink('/proc/1/exe')), os.readlink('/proc/self/ns/pid'))")
            node, pid1, pidns = p.stdout.read().split()
            assert p.wait() == 0
        finally:
            sb.terminate()
    assert node and pid1 == "bwrap" and pidns != os.readlink("/proc/self/ns/pid")
