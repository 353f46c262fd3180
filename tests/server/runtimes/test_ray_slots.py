"""How the ray runtime holds a container's resources and which agent runs it, without a cluster
(tests/integration/test_cluster_starts.py runs it on a real one): a GPU-less container's
placement group bundle, calls shaped as an actor's reaching its node's agent by container id,
and what the node agent does with a container it is told to release."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest

from ferry.server.runtimes import ContainerSpec
from ferry.server.runtimes.ray import node_agent
from ferry.server.runtimes.ray.runtime import DEFAULT_CPU, MIB, RayRuntime
from ferry.server.runtimes.ray.slots import OnNode


def test_a_container_without_a_gpu_asks_ray_for_a_bundle_of_its_resources():
    runtime = RayRuntime("127.0.0.1:6379")
    plain = runtime._bundle(ContainerSpec(container_id="ct-1", function_id="fu", server_url="x"))
    assert plain == {"CPU": DEFAULT_CPU}
    sized = runtime._bundle(ContainerSpec(container_id="ct-2", function_id="fu", server_url="x", cpu=1.5,
                                          memory_mb=300))
    assert sized == {"CPU": 1.5, "memory": 300 * MIB}


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> Any:
        recorder = self

        class Method:
            def remote(self, *args: Any) -> str:
                recorder.calls.append((name, *args))
                return "ref"

        return Method()


def test_calls_on_a_node_name_their_container():
    agent = _Recorder()
    on_node = OnNode(agent, "ct-7")
    assert on_node.start.remote({"launch": 1}) == "ref"
    on_node.put_blobs.remote({"d": b"x"})
    assert agent.calls == [("call", "ct-7", "start", {"launch": 1}), ("call", "ct-7", "put_blobs", {"d": b"x"})]
    with pytest.raises(AttributeError):
        on_node._private  # noqa: B018 - not an agent method


class _FakeContainer:
    """Stands in for agent.ContainerAgent: records what the node agent asks of it."""

    made: list["_FakeContainer"] = []

    def __init__(self) -> None:
        self.signals: list[int] = []
        self.started = asyncio.Event()
        self.finish_start = asyncio.Event()
        self._process: Any = None
        self._exited = asyncio.Event()
        self._pin = None
        self.waited = 0
        _FakeContainer.made.append(self)

    async def start(self, launch: dict[str, Any]) -> dict[str, Any]:
        self.started.set()
        await self.finish_start.wait()
        self._process = object()
        return {"node_id": "n", "pid": 1, "launch": launch}

    async def signal(self, sig: int) -> None:
        self.signals.append(sig)

    async def wait(self) -> dict[str, Any]:
        self.waited += 1
        self._exited.set()
        return {"code": -9}


@pytest.fixture()
def agent(monkeypatch: pytest.MonkeyPatch) -> node_agent.NodeAgent:
    _FakeContainer.made = []
    monkeypatch.setattr(node_agent, "ContainerAgent", _FakeContainer)
    return node_agent.NodeAgent()


def test_the_node_agent_keeps_one_container_agent_per_container(agent):
    async def run() -> None:
        first = asyncio.ensure_future(agent.call("ct-1", "start", {"n": 1}))
        second = asyncio.ensure_future(agent.call("ct-2", "start", {"n": 2}))
        await asyncio.sleep(0)
        for made in _FakeContainer.made:
            made.finish_start.set()
        assert (await first)["launch"] == {"n": 1} and (await second)["launch"] == {"n": 2}
        assert await agent.containers() == ["ct-1", "ct-2"]
        await agent.call("ct-1", "signal", int(signal.SIGTERM))
        assert _FakeContainer.made[0].signals == [signal.SIGTERM] and not _FakeContainer.made[1].signals

    asyncio.run(run())


def test_a_released_container_is_killed_and_its_later_calls_fail(agent):
    async def run() -> None:
        await agent.call("ct-1", "signal", 0)  # made
        container = _FakeContainer.made[0]
        container.finish_start.set()
        await agent.call("ct-1", "start", {})
        await agent.release("ct-1")
        assert container.signals[-1] == signal.SIGKILL
        await asyncio.sleep(0)
        assert container.waited == 1  # nobody was waiting for it: the agent cleans it up
        assert await agent.containers() == []
        with pytest.raises(RuntimeError, match="was released"):
            await agent.call("ct-1", "wait")

    asyncio.run(run())


def test_a_container_released_while_it_starts_is_killed_once_started(agent):
    async def run() -> None:
        starting = asyncio.ensure_future(agent.call("ct-1", "start", {}))
        container = None
        while container is None:
            await asyncio.sleep(0)
            container = _FakeContainer.made[0] if _FakeContainer.made else None
        await container.started.wait()
        await agent.release("ct-1")  # its placement group is gone: nothing may run for it
        container.finish_start.set()
        with pytest.raises(RuntimeError, match="released on this node while it started"):
            await starting
        assert container.signals[-1] == signal.SIGKILL

    asyncio.run(run())
