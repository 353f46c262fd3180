# Host packages these tests need (Debian 12, as root): bubblewrap, mmdebstrap, uidmap, passt
# and iproute2 (see scripts/test.sh); /dev/net/tun usable by every user (mode 0666).
"""What a sandbox container is kept from: host root (root inside is an unprivileged host id)
and the host's network (its own namespace: outbound traffic through pasta, never the host's
loopback; loopback only with block_network=True, the control plane still reachable over
the server's Unix socket). The process runtime refuses block_network=True.

Outbound traffic is checked against an HTTP server that the test runs in a network namespace
of its own, linked to the host by a veth pair with addresses the test picks: no traffic
leaves the machine."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import ferry
from ferry.server.runtimes.sandbox.ids import SANDBOX_IDS

from ..conftest import ServerProcess
from .apps import network_apps

REFUSED = "error: ConnectionRefusedError"


@pytest.fixture
def host_loopback_port() -> Iterator[int]:
    """A TCP service listening on the host's 127.0.0.1 (the kernel completes connections to
    a listening socket, so reaching it is enough to connect)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def other_namespace_server(tmp_path: Path) -> Iterator[str]:
    """An HTTP server in a network namespace created here (veth pair 10.213.N.1 on the host,
    10.213.N.2 in the namespace); its URL. The namespace, the pair and the server go at the end."""
    tag = uuid.uuid4().hex[:6]
    namespace, host_end, inner_end = f"ferry-t-{tag}", f"fv{tag}a", f"fv{tag}b"
    subnet = f"10.213.{random.randint(1, 250)}"
    (tmp_path / "hello.txt").write_text("hello from the other namespace")
    server = None
    _ip("netns", "add", namespace)
    try:
        _ip("link", "add", host_end, "type", "veth", "peer", "name", inner_end)
        _ip("link", "set", inner_end, "netns", namespace)
        _ip("addr", "add", f"{subnet}.1/30", "dev", host_end)
        _ip("link", "set", host_end, "up")
        for args in (("addr", "add", f"{subnet}.2/30", "dev", inner_end), ("link", "set", inner_end, "up"),
                     ("link", "set", "lo", "up")):
            _ip("netns", "exec", namespace, "ip", *args)
        port = 8000 + random.randint(0, 999)
        server = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, "-m", "http.server", "--bind", f"{subnet}.2",
             "--directory", str(tmp_path), str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((f"{subnet}.2", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the HTTP server in the test namespace did not start"
                assert server.poll() is None, "the HTTP server in the test namespace exited"
                time.sleep(0.05)
        yield f"http://{subnet}.2:{port}/hello.txt"
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "del", host_end], capture_output=True, timeout=10)  # gone with it, normally


def test_root_inside_is_not_root_on_the_host(on_sandbox: ServerProcess) -> None:
    name = f"owned-{uuid.uuid4().hex[:8]}"
    with network_apps.app.run(show_logs=False):
        seen = network_apps.write_files.remote(name)
        # the container is still up (idle): its volume view and writable layer are on the host
        in_volume = list((on_sandbox.home / "sandbox").glob(f"*/volumes/*/{name}"))
        in_layer = list((on_sandbox.home / "sandbox").glob(f"*/upper/{name}"))
        owners = [(p.stat().st_uid, p.stat().st_gid) for p in (*in_volume, *in_layer)]
    assert (seen["uid"], seen["gid"], seen["volume_owner"]) == (0, 0, 0)
    assert seen["uid_map"] == ["0", str(SANDBOX_IDS.base), str(SANDBOX_IDS.count)]
    assert len(in_volume) == 1 and len(in_layer) == 1
    assert owners == [(SANDBOX_IDS.base, SANDBOX_IDS.base)] * 2  # not host root (0)


def test_the_hosts_loopback_is_out_of_reach(on_sandbox: ServerProcess, host_loopback_port: int) -> None:
    server_port = int(on_sandbox.url.rsplit(":", 1)[1])  # the control plane's own TCP port
    targets = [["127.0.0.1", host_loopback_port], ["localhost", host_loopback_port],
               ["127.0.0.1", server_port]]
    with network_apps.app.run(show_logs=False):
        seen = network_apps.probe.remote(targets)
    assert seen.pop("server_url") == "ferry+unix:///run/ferry/control.sock"
    interfaces = seen.pop("interfaces")
    assert "lo" in interfaces and len(interfaces) == 2  # its own loopback and pasta's interface
    assert seen == {f"{host}:{port}": REFUSED for host, port in targets}  # its own loopback answers


def test_outbound_traffic_works_and_block_network_blocks_it(on_sandbox: ServerProcess,
                                                            other_namespace_server: str) -> None:
    url = other_namespace_server
    with network_apps.app.run(show_logs=False):
        assert network_apps.probe.remote([url])[url] == "hello from the other namespace"
        blocked = network_apps.probe_blocked.remote([url])
        assert blocked[url].startswith("error: ") and blocked["interfaces"] == ["lo"]
        assert network_apps.double_blocked.remote(21) == 42  # calls still work


def test_the_process_runtime_refuses_block_network(server: ServerProcess) -> None:
    with pytest.raises(ferry.Error, match="block_network=True needs the sandbox runtime"):
        with network_apps.app.run(show_logs=False):
            network_apps.probe_blocked.remote([])


def test_layers_cached_before_user_namespaces_are_shifted_on_first_use(
        tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A layer store written when sandboxes ran as host root (files owned by uid 0) still
    works: the server gives its layers to the sandbox ids the first time a container uses them."""
    home = tmp_path_factory.mktemp("ferry-sandbox-migration")
    server = ServerProcess.start(home, extra_env={"FERRY_RUNTIME": "sandbox"})
    server.use(monkeypatch)
    try:
        with network_apps.app.run(show_logs=False):  # builds the image's layers
            network_apps.probe.remote([])
    finally:
        server.stop()
    layers = [p for p in (home / "images" / "layers").iterdir() if p.is_dir()]
    assert layers and all(p.stat().st_uid == SANDBOX_IDS.base for p in layers)
    for layer in layers:  # as an older Ferry left them (never the shared base root filesystem)
        _unshift(layer)
    assert all(p.stat().st_uid == 0 for p in layers)
    server = ServerProcess.start(home, extra_env={"FERRY_RUNTIME": "sandbox"})
    server.use(monkeypatch)
    try:
        with network_apps.app.run(show_logs=False):
            assert network_apps.write_files.remote("after-migration")["uid"] == 0
    finally:
        server.stop()
    owners = {p.stat().st_uid for layer in layers for p in (layer, *layer.rglob("*")) if not p.is_symlink()}
    assert owners and all(SANDBOX_IDS.contains(uid) for uid in owners)


def _unshift(root: Path) -> None:
    import os

    for path in (*root.rglob("*"), root):
        info = os.lstat(path)
        if SANDBOX_IDS.contains(info.st_uid):
            os.lchown(path, info.st_uid - SANDBOX_IDS.base, info.st_gid - SANDBOX_IDS.base)
