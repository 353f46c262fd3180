"""Spare sandboxes on sandbox nodes of the `ray` runtime (server/runtimes/ray/node_spares.py), on a
real Ray cluster of one node on this machine with FERRY_NODE_RUNTIME=sandbox: after a container of
an image starts on the node, its agent starts a spare of that kind, whose environment holds no
container's ids, credential or secrets; the next container of the image becomes that spare
(its process is the spare's), with its secret, pid 1 bwrap, its own namespaces, and no way to
the node's loopback; a spare of a kind with memory= is in a cgroup with that limit, enforced
once it is a container; killing the agent ends its spares too. The cluster is ended by SIGKILL of
what it started (tests/integration/ray_cluster.py); never `ray stop`.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from pathlib import Path
from typing import Iterator

import pytest

from ..conftest import ServerProcess
import ferry

from .apps.cluster_sandbox import allocate_where, app, spared
from .ray_cluster import Cluster, cluster_of

pytest.importorskip("ray")

BASE_ROOTFS_DIR = os.environ.get("FERRY_BASE_ROOTFS_DIR") or "/var/cache/ferry-test"
SPARE = b"ferry._container.spare"
KIND = b"SPARE_KIND=node-spares"  # in the environment of spare_image's sandboxes


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with cluster_of(("head", "--num-cpus", "2"), prefix="ferry-ray-spares-") as cluster:
        yield cluster


@pytest.fixture(scope="module")
def ray_server(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess.start(
        tmp_path_factory.mktemp("ray-spares-home"), base_env=cluster.env(), args=("--ray-address", cluster.address),
        extra_env={"FERRY_RUNTIME": "ray", "FERRY_NODE_RUNTIME": "sandbox", "FERRY_BASE_ROOTFS_DIR": BASE_ROOTFS_DIR},
        timeout=120)
    try:
        with server.used():
            yield server
    finally:
        server.stop()


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()


def _alive(pid: int) -> bool:
    try:
        return _stat(pid)[0] != "Z"
    except FileNotFoundError:
        return False


def _waiting_spares(kind: bytes = KIND) -> dict[int, list[bytes]]:
    """The Pythons of spare sandboxes waiting for their claim on this machine (their environment
    names FERRY_SPARE_FD; one claimed has taken its container's environment, which /proc does not
    show, but is known by its FERRY_CONTAINER_ID below), by pid, with their environments."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and SPARE in (entry / "cmdline").read_bytes():
                env = (entry / "environ").read_bytes().split(b"\0")
                if kind in env and any(v.startswith(b"FERRY_SPARE_FD=") for v in env):
                    found[int(entry.name)] = env
        except OSError:
            continue
    return found


def _in_a_spare_cgroup(pid: int) -> bool:
    try:
        return "/spare-" in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False


def _wait_for_spare(kind: bytes = KIND, limited: bool = False) -> dict[int, list[bytes]]:
    """Until a spare of `kind` waits (`limited`: one in a cgroup of its own, one with limits)."""
    deadline = time.monotonic() + 180
    while not (spares := {pid: env for pid, env in _waiting_spares(kind).items()
                          if not limited or _in_a_spare_cgroup(pid)}) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert spares, "no spare sandbox started on the node after a container of its kind"
    return spares


def _inner_pid(pid: int) -> int:
    """The pid of host process `pid` in its own PID namespace."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError(f"no NSpid for {pid}")


def test_the_next_container_of_an_image_on_a_node_becomes_its_spare(ray_server, cluster):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        with app.run(show_logs=False):
            first = spared.remote(port)
            assert SPARE.decode() not in first["cmdline"]  # the first of its kind: no spare yet
            spares = _wait_for_spare()
            for env in spares.values():  # nothing of a container before its claim
                names = {v.partition(b"=")[0] for v in env}
                assert not names & {b"FERRY_CONTAINER_ID", b"FERRY_FUNCTION_ID", b"SPARE_SECRET",
                                    b"FERRY_CONTAINER_SECRET", b"FERRY_TOKEN_ID", b"FERRY_TOKEN_SECRET"}, names
            second = spared.with_options(timeout=301).remote(port)  # a new function: a new container
            # its process is one of the spares seen waiting: in its PID namespace, with its pid there
            became = [pid for pid in spares if _alive(pid) and _inner_pid(pid) == second["pid"]
                      and os.readlink(f"/proc/{pid}/ns/pid") == second["namespaces"]["pid"]]
            assert len(became) == 1, (spares, second)
        with pytest.raises(BlockingIOError):  # nothing came in from either container
            listener.accept()
    finally:
        listener.close()
    assert SPARE.decode() in second["cmdline"], second["cmdline"]  # it became a spare
    assert second["secret"] == "s3cret" and second["credential"]  # its secret and credential came with its claim
    assert second["container"] != first["container"] and second["container"].startswith("ct-")
    for name, namespace in second["namespaces"].items():  # none is the node's
        assert namespace != os.readlink(f"/proc/self/ns/{name}"), name
    assert second["uid"] == 0 and os.path.basename(second["pid1"]) == "bwrap" and second["pid"] < 10
    assert second["loopback"] == "ConnectionRefusedError"  # its own loopback, not the node's
    assert second["url"] == "ferry+unix:///run/ferry/control.sock"  # its agent's relay


def test_a_container_that_claimed_a_spare_has_its_memory_limit(ray_server):
    """A spare of a kind with limits is started in a cgroup with them (as on one machine)."""
    with app.run(show_logs=False):
        assert SPARE.decode() not in allocate_where.remote(8)
        _wait_for_spare(limited=True)
        variant = allocate_where.with_options(timeout=303)
        assert SPARE.decode() in variant.remote(8)
        with pytest.raises(ferry.exception.OutOfMemoryError, match="96 MiB"):
            variant.remote(300)


def test_spares_die_with_their_agent(ray_server, cluster):
    """Last: it kills the node's agent (the next container on the node gets a new one)."""
    with app.run(show_logs=False):
        spared.remote(0)  # (a spare of its kind follows, if none waits)
        spares = _wait_for_spare()
        pid = next(iter(spares))
        init = int(_stat(pid)[1])  # pid 1 inside: bwrap's init
        bwrap = int(_stat(init)[1])  # the launcher, exec'd into bwrap
        agent = int(_stat(bwrap)[1])
        assert Path(f"/proc/{bwrap}/comm").read_text().strip() == "bwrap"
        assert re.match(rb"ray::NodeAgent", Path(f"/proc/{agent}/cmdline").read_bytes())
        scratches = list((cluster.nodes["head"].cache / "sandboxes").glob(f"{agent}-spare-*"))
        assert scratches  # the spare's writable layer, named for its agent
        os.kill(agent, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while (_alive(pid) or _alive(bwrap)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(pid) and not _alive(bwrap), "a spare sandbox outlived its agent"
        spared.with_options(timeout=302).remote(0)  # a new agent, whose first start removes what it left
        assert not any(path.exists() for path in scratches)
