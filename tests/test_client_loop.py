"""The client loop (`_sync.client_loop`) runs on uvloop wherever uvloop installs (it is a
dependency there), so a plain installation is as fast as the benchmarks."""

from __future__ import annotations

import asyncio
import sys

import pytest

from ferry._sync import client_loop, new_event_loop, run_sync


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop does not support Windows")
def test_the_client_loop_is_uvloop():
    import uvloop

    assert isinstance(client_loop(), uvloop.Loop)

    async def running() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    assert run_sync(running()) is client_loop()


def test_without_uvloop_it_falls_back_to_asyncio(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    loop = new_event_loop()
    try:
        assert type(loop).__module__.startswith("asyncio")
    finally:
        loop.close()
