"""The sandbox runtime on Ray nodes (runtimes/ray/node_sandbox.py): which runtime a node gives a
container, and the Unix socket that carries a sandbox's connections to the control plane."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from ferry.exception import InvalidError
from ferry.server.runtimes.ray import node_sandbox
from ferry.server.runtimes.ray.node_sandbox import ControlRelay, node_runtime, remove_leftovers


def test_a_node_gives_a_sandbox_where_it_can_and_says_why_not(monkeypatch):
    monkeypatch.setattr(node_sandbox, "sandbox_unavailable_reason", lambda: None)
    assert node_runtime("auto", gpu=False) == {"runtime": "sandbox", "why": None}
    assert node_runtime("sandbox", gpu=False)["runtime"] == "sandbox"
    assert node_runtime("process", gpu=False) == {"runtime": "process", "why": None}
    assert node_runtime("auto", gpu=True) == {"runtime": "process",
                                              "why": "GPU containers do not run in sandboxes on nodes yet"}
    monkeypatch.setattr(node_sandbox, "sandbox_unavailable_reason", lambda: "bwrap is not installed")
    assert node_runtime("auto", gpu=False) == {"runtime": "process", "why": "bwrap is not installed"}
    with pytest.raises(InvalidError, match="FERRY_NODE_RUNTIME=sandbox, but .*: bwrap is not installed"):
        node_runtime("sandbox", gpu=False)
    with pytest.raises(InvalidError, match="use one of auto, sandbox, process"):
        node_runtime("docker", gpu=False)


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
