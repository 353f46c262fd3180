"""A throwaway Ray cluster of several nodes on this machine, for the ray runtime's tests and
benchmarks (tests/integration/test_cluster.py, bench/cluster.py).

Each node is a `ray start --block` in its own process group, with its own ports, temporary
directory (under one root) and FERRY_NODE_CACHE, token authentication on, and none of the
caller's FERRY_* / RAY_* settings. `Cluster.stop` ends exactly what it started: SIGTERM then
SIGKILL to each node's process group, then SIGKILL to any process whose command line or
environment names the cluster's root directory (Ray's workers retitle themselves, and
Ferry's containers carry FERRY_NODE_CACHE). Never `ray stop`: it ends every Ray process on
the machine.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from ..conftest import ServerProcess

RAY = str(Path(sys.executable).with_name("ray"))


# -- the cluster ----------------------------------------------------------------------------
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free now and never handed out before in this process: the kernel may give the
    same ephemeral port to two binds in a row, and Ray refuses a node whose components share
    one (seen under load: metrics_export and object_manager on one port)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


@dataclass
class Node:
    name: str
    process: subprocess.Popen
    cache: Path

    def die(self) -> None:
        """SIGKILL to its process group at once: the node dies as with its machine (its raylet
        gone, its workers follow)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    def kill(self) -> None:
        """SIGTERM to its process group, then SIGKILL after a short wait (`ray start --block`
        does not stop promptly on SIGTERM)."""
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(3)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()


@dataclass
class Cluster:
    root: Path
    address: str
    token: str
    nodes: dict[str, Node] = field(default_factory=dict)

    def env(self, cache: Path | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FERRY_", "RAY_"))}
        env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token, "RAY_USAGE_STATS_ENABLED": "0",
                    # a dead node is noticed in about 3 s instead of Ray's default 30 s or so
                    "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
                    "RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_timeout_ms": "1000"})
        if cache is not None:
            env["FERRY_NODE_CACHE"] = str(cache)
        return env

    def start_node(self, name: str, *extra: str, head: bool = False, env: dict[str, str] | None = None,
                   wrap: tuple[str, ...] = ()) -> None:
        """Start node `name` (`ray start` options `extra`; `env`: more of its environment; `wrap`:
        the command `ray start` runs under, e.g. `unshare --user` for a node that is not root)."""
        cache = self.root / f"cache-{name}"
        base = 10000 + secrets.randbelow(9000)  # below the ephemeral ports that _free_port hands out
        ports = ["--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
                 "--metrics-export-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
                 "--dashboard-agent-grpc-port", str(free_port()), "--runtime-env-agent-port", str(free_port()),
                 "--min-worker-port", str(base), "--max-worker-port", str(base + 200)]
        where = (["--head", "--port", self.address.rsplit(":", 1)[1], "--include-dashboard", "false",
                  "--ray-client-server-port", str(free_port())] if head else ["--address", self.address])
        log = open(self.root / f"{name}.log", "ab")
        process = subprocess.Popen(
            [*wrap, RAY, "start", "--block", *where, "--node-ip-address", "127.0.0.1", "--temp-dir",
             str(self.root / f"ray-{name}"), "--disable-usage-stats", *ports, *extra],
            env={**self.env(cache), **(env or {})}, stdout=log, stderr=log, start_new_session=True)
        self.nodes[name] = Node(name, process, cache)

    def wait_for_nodes(self, count: int, timeout: float = 120) -> None:
        """Until `count` nodes are alive (asked through a Ray client with the token)."""
        script = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False); "
                  "import time\nfor _ in range(400):\n"
                  "    n = sum(1 for x in ray.nodes() if x['Alive'])\n"
                  "    if n >= int(sys.argv[2]): break\n"
                  "    time.sleep(0.3)\nprint(n)")
        try:
            result = subprocess.run([sys.executable, "-c", script, self.address, str(count)], env=self.env(),
                                    capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            result = subprocess.CompletedProcess(exc.cmd, 1, "0", str(exc.stderr or "")[-1500:])
        alive = int((result.stdout.strip().splitlines() or ["0"])[-1])
        logs = "\n".join(f"--- {p.name}:\n{p.read_text(errors='replace')[-1500:]}" for p in self.root.glob("*.log"))
        assert alive >= count, f"{alive} Ray nodes alive, expected {count}:\n{result.stderr[-1500:]}\n{logs}"

    def stop(self) -> None:
        for node in self.nodes.values():
            node.kill()
        # Ray's agents name the cluster's directory on their command line; its workers (which
        # retitle themselves `ray::...`) and Ferry's containers have it in their environment
        # (FERRY_NODE_CACHE), as no other process does
        marker = str(self.root).encode()
        for pid in [p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]:
            try:
                found = marker in Path(f"/proc/{pid}/cmdline").read_bytes()
                found = found or marker in Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            if found:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass


@contextlib.contextmanager
def cluster_of(*nodes: tuple[str, ...], prefix: str = "ferry-ray-", env: dict[str, dict[str, str]] | None = None,
               wrap: dict[str, tuple[str, ...]] | None = None) -> Iterator[Cluster]:
    """A cluster of `nodes`, each a name then its `ray start` arguments (the first is the head;
    `env`: more of a node's environment, `wrap`: the command its `ray start` runs under, by its
    name), under a new directory of /tmp (short: Ray's socket paths); stopped and removed
    afterwards."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    cluster = Cluster(root=root, address=f"127.0.0.1:{free_port()}", token=secrets.token_hex(32))
    try:
        for index, (name, *arguments) in enumerate(nodes):
            cluster.start_node(name, *arguments, head=index == 0, env=(env or {}).get(name),
                               wrap=(wrap or {}).get(name, ()))
            if index == 0:
                cluster.wait_for_nodes(1)
        cluster.wait_for_nodes(len(nodes))
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def ray_server_of(home: Path, cluster: Cluster, node_runtime: str = "process",
                  extra_env: dict[str, str] | None = None, timeout: float = 120) -> Iterator["ServerProcess"]:
    """A control plane with the ray runtime on `cluster` (ray.init takes seconds on a busy
    machine), its nodes' runtime FERRY_NODE_RUNTIME=`node_runtime`, used by this process's
    clients while the block runs; stopped afterwards."""
    from ..conftest import ServerProcess

    server = ServerProcess.start(home, base_env=cluster.env(), args=("--ray-address", cluster.address),
                                 extra_env={"FERRY_RUNTIME": "ray", "FERRY_NODE_RUNTIME": node_runtime,
                                            **(extra_env or {})}, timeout=timeout)
    try:
        with server.used():
            yield server
    finally:
        server.stop()


def module_cluster(*nodes: tuple[str, ...], prefix: str = "ferry-ray-", env: dict[str, dict[str, str]] | None = None,
                   node_runtime: str = "process", server_env: dict[str, str] | None = None,
                   wrap: dict[str, tuple[str, ...]] | None = None) -> tuple[Any, Any]:
    """A test module's `cluster` and `ray_server` fixtures (module-scoped): `cluster_of(nodes)`
    and `ray_server_of` it, with FERRY_NODE_RUNTIME=`node_runtime` and `server_env`."""
    import pytest

    @pytest.fixture(scope="module")
    def cluster() -> Iterator[Cluster]:
        with cluster_of(*nodes, prefix=prefix, env=env, wrap=wrap) as made:
            yield made

    @pytest.fixture(scope="module")
    def ray_server(cluster: Cluster, tmp_path_factory: Any) -> Iterator["ServerProcess"]:
        with ray_server_of(tmp_path_factory.mktemp("ray-home"), cluster, node_runtime, server_env) as server:
            yield server

    return cluster, ray_server
