"""The sandbox runtime on Ray nodes (runtimes/ray/node_sandbox.py): which runtime a node gives a
container, and the Unix socket that carries a sandbox's connections to the control plane."""

from __future__ import annotations

import asyncio
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ferry.exception import InvalidError
from ferry.server.runtimes.ray import node_sandbox
from ferry.server.runtimes.ray.node_sandbox import ControlRelay, node_runtime, remove_leftovers
from ferry.server.runtimes.sandbox.gpu import BIN_DIR, LIB_DIR


def test_a_node_gives_a_sandbox_where_it_can_and_says_why_not(monkeypatch):
    monkeypatch.setattr(node_sandbox, "sandbox_unavailable_reason", lambda: None)
    assert node_runtime("auto") == {"runtime": "sandbox", "why": None}
    assert node_runtime("sandbox")["runtime"] == "sandbox"
    assert node_runtime("process") == {"runtime": "process", "why": None}
    monkeypatch.setattr(node_sandbox, "sandbox_unavailable_reason", lambda: "bwrap is not installed")
    assert node_runtime("auto") == {"runtime": "process", "why": "bwrap is not installed"}
    assert node_runtime("auto", ["0"]) == {"runtime": "process", "why": "bwrap is not installed"}
    with pytest.raises(InvalidError, match="FERRY_NODE_RUNTIME=sandbox, but .*: bwrap is not installed"):
        node_runtime("sandbox")
    with pytest.raises(InvalidError, match="use one of auto, sandbox, process"):
        node_runtime("docker")


def _fake_dev(root: Path, names: list[str]) -> Path:
    root.mkdir()
    for name in names:
        (root / name).touch()
    return root


def test_a_gpu_container_is_a_sandbox_where_each_of_its_gpus_has_its_device_node(monkeypatch, tmp_path):
    dev = _fake_dev(tmp_path / "dev", ["nvidia0", "nvidia1", "nvidiactl"])
    monkeypatch.setattr(node_sandbox, "sandbox_unavailable_reason", lambda: None)
    monkeypatch.setattr(node_sandbox, "gpu_devices_reason",
                        functools.partial(node_sandbox.gpu_devices_reason, dev_root=dev))
    assert node_runtime("auto", ["1"]) == {"runtime": "sandbox", "why": None}
    assert node_runtime("sandbox", ["0", "1"])["runtime"] == "sandbox"
    declared_only = node_runtime("auto", ["2"])  # a GPU Ray was told of (--num-gpus) and no driver shows
    assert declared_only["runtime"] == "process"
    assert declared_only["why"] == (f"this node has no {dev / 'nvidia2'} for GPU 2 (Ray's id): its GPUs are declared "
                                    "to Ray (e.g. with --num-gpus) but no NVIDIA driver shows them")
    assert "Ray names its GPU 'GPU-8f2c'" in node_runtime("auto", ["GPU-8f2c"])["why"]
    with pytest.raises(InvalidError, match=r"FERRY_NODE_RUNTIME=sandbox, but .*no .*nvidia2 for GPU 2"):
        node_runtime("sandbox", ["2"])


def test_a_gpu_sandbox_gets_its_devices_the_driver_and_cudas_variables(monkeypatch, tmp_path):
    dev = _fake_dev(tmp_path / "dev", ["nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"])
    libcuda = tmp_path / "libcuda.so.550.1"
    libcuda.touch()
    loader = f"\tlibcuda.so.1 (libc6,x86-64) => {libcuda}"
    monkeypatch.setattr(node_sandbox, "gpu_access",
                        functools.partial(node_sandbox.gpu_access, dev_root=dev, ldconfig_output=loader))
    monkeypatch.setattr(node_sandbox.NodeLayers, "paths", lambda self, manifest: [tmp_path / "layer"])
    manifest = {"python": "/usr/bin/python3", "env": {"PATH": "/usr/local/bin:/usr/bin:/bin"}, "mounts": []}
    launch = {"sandbox": manifest, "server_url": "ferry://10.0.0.1:7000", "env": {}, "container_id": "ct-1",
              "function_id": "fn-1", "gpu_type": "T4", "gpu_indices": [1]}

    spec = asyncio.run(node_sandbox.sandbox_spec(launch, tmp_path / "cache", "n1", tmp_path / "scratch"))
    assert list(spec.devices) == [str(dev / "nvidia1"), str(dev / "nvidiactl"), str(dev / "nvidia-uvm")]
    assert (libcuda, f"{LIB_DIR}/libcuda.so.1") in [(b.host_path, b.container_path) for b in spec.binds]
    assert spec.env["CUDA_VISIBLE_DEVICES"] == spec.env["NVIDIA_VISIBLE_DEVICES"] == "1"
    assert spec.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID" and spec.env["FERRY_GPU_TYPE"] == "T4"
    assert spec.env["LD_LIBRARY_PATH"] == LIB_DIR
    assert spec.env["PATH"] == f"{BIN_DIR}:/usr/local/bin:/usr/bin:/bin"

    plain = asyncio.run(node_sandbox.sandbox_spec({**launch, "gpu_type": None, "gpu_indices": None},
                                                  tmp_path / "cache", "n1", tmp_path / "scratch"))
    assert not plain.devices and "CUDA_VISIBLE_DEVICES" not in plain.env


def test_the_relay_carries_bytes_both_ways_to_the_control_plane(tmp_path):
    async def main() -> None:
        received: list[bytes] = []

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = await reader.readexactly(5)
            received.append(data)
            writer.write(data.upper())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        relay = ControlRelay(tmp_path / "control.sock", f"ferry://127.0.0.1:{port}")
        await relay.start()
        assert (tmp_path / "control.sock").stat().st_mode & 0o777 == 0o666
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "control.sock"))
        writer.write(b"hello")
        await writer.drain()
        assert await reader.read() == b"HELLO" and received == [b"hello"]
        writer.close()
        relay.close()
        await asyncio.sleep(0)
        server.close()
        with pytest.raises(InvalidError, match="not a TCP address"):
            await ControlRelay(tmp_path / "other.sock", "ferry+unix:///run/x.sock").start()

    asyncio.run(main())


def test_writable_layers_of_containers_whose_agent_is_gone_are_removed(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, alive = tmp_path / f"{gone.stdout.strip()}-c1", tmp_path / f"{os.getpid()}-c2"
    for scratch in (dead, alive):
        (scratch / "upper").mkdir(parents=True)
    assert remove_leftovers(tmp_path) == [dead] and alive.is_dir() and not dead.exists()
    assert remove_leftovers(tmp_path / "none") == []
