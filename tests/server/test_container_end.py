"""An ended container is judged only after the server has read what it sent before it exited:
the end of its process and the last frames on its connection (a `timeout` or `init_failed`
push, its last outputs) arrive by different paths, and on a busy server the exit can come
first; judged then, a timed-out input was reported as a bare "exited with code 1"."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, Callable

import pytest

from ferry.server import containers as containers_module
from ferry.server.containers import ContainerManager
from ferry.server.model import Container
from ferry.server.runtimes.base import ExitStatus


class FakeConnection:
    def __init__(self) -> None:
        self.closed = False
        self.on_close: list[Callable[[], None]] = []

    def close(self) -> None:
        self.closed = True
        callbacks, self.on_close = self.on_close, []
        for callback in callbacks:
            callback()


class ExitedHandle:
    """A container process that has already exited with code 1."""

    async def wait(self) -> ExitStatus:
        return ExitStatus(code=1)

    def terminate(self) -> None:
        pass


def _manager(judged: list[dict[str, Any]]) -> ContainerManager:
    async def start(spec: Any, on_output: Any) -> ExitedHandle:
        return ExitedHandle()

    manager = ContainerManager(server_url="tcp://127.0.0.1:1", runtime=SimpleNamespace(start=start),  # type: ignore[arg-type]
                               store=None, scheduler=None, logs=None, wake_autoscaler=lambda pool: None,  # type: ignore[arg-type]
                               secrets=None)  # type: ignore[arg-type]
    manager.spec_for = lambda container: SimpleNamespace(snapshot=None)  # type: ignore[method-assign]

    def ended(container: Container, status: ExitStatus, reason: str = "") -> None:
        judged.append({"stop_reason": container.stop_reason, "code": status.code,
                       "conn_closed": container.conn.closed if container.conn else None})

    manager._ended = ended  # type: ignore[method-assign]
    return manager


def _container(conn: FakeConnection) -> Container:
    pool = SimpleNamespace(tag="f", app=SimpleNamespace(id="ap-1"), definition={}, function_id="fu-1", base_id=None)
    return Container(id="ct-1", pool=pool, conn=conn)  # type: ignore[arg-type]


def test_the_last_frames_are_read_before_the_end_is_judged() -> None:
    judged: list[dict[str, Any]] = []
    manager, conn = _manager(judged), FakeConnection()
    container = _container(conn)

    async def main() -> None:
        run = asyncio.create_task(manager._run(container))
        for _ in range(5):  # the process's exit is known; the connection is still being read
            await asyncio.sleep(0)
        assert judged == []
        container.stop_reason = "timeout: the input ran longer than the function's timeout of 1s"  # its last push
        conn.close()  # end of file
        await asyncio.wait_for(run, 5)

    asyncio.run(main())
    assert judged == [{"stop_reason": "timeout: the input ran longer than the function's timeout of 1s",
                       "code": 1, "conn_closed": True}]


def test_a_connection_that_stays_open_delays_the_end_only_briefly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(containers_module, "READ_TO_THE_END_SECONDS", 0.05)
    judged: list[dict[str, Any]] = []
    manager, conn = _manager(judged), FakeConnection()  # (a process it forked holds the socket)

    asyncio.run(asyncio.wait_for(manager._run(_container(conn)), 5))
    assert judged == [{"stop_reason": "", "code": 1, "conn_closed": False}]
