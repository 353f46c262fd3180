"""BuildsInProgress: what the dashboard lists as building now, from a build's progress events."""

from __future__ import annotations

import pytest

from ferry.server.images.builder import BuildsInProgress


def test_a_build_shows_from_its_first_built_step_until_it_ends() -> None:
    builds = BuildsInProgress()
    builds.note("im-1", {"event": "plan", "labels": ["FROM debian", "pip install six"], "key": "im-1"})
    builds.note("im-1", {"event": "step", "index": 0, "state": "cached"})
    assert builds.list() == []  # the cache answered: no build (yet)
    builds.note("im-1", {"event": "step", "index": 1, "state": "building"})
    builds.note("im-1", {"event": "log", "index": 1, "text": "Collecting six"})
    [entry] = builds.list()
    assert entry["key"] == "im-1" and entry["state"] == "building"
    assert entry["label"] == "FROM debian -> pip install six" and entry["step"] == "2/2 pip install six"
    builds.done("im-1")
    assert builds.list() == []


def test_a_cached_image_never_shows() -> None:
    builds = BuildsInProgress()
    builds.note("im-2", {"event": "plan", "labels": ["FROM debian"], "key": "im-2"})
    builds.note("im-2", {"event": "step", "index": 0, "state": "cached"})
    builds.done("im-2")
    assert builds.list() == []


def test_a_build_whose_request_is_cancelled_leaves_no_entry_once_it_ends(tmp_path) -> None:
    """The build goes on in its thread after its request is cancelled (its client went away):
    the entry goes when that thread ends, after the build's last event, not with the request;
    and a second build of the image waits for that thread rather than running beside it."""
    import asyncio
    import threading

    from ferry.server.blobs import BlobStore
    from ferry.server.images.builder import ImageService

    service = ImageService(tmp_path, BlobStore(tmp_path / "blobs"), "process", base_dir=tmp_path / "bases",
                           ca_bundle="", step_timeout=60)
    release, finished = threading.Event(), threading.Event()
    running: list[int] = []

    def slow_build(wire, force, progress):
        if running:  # a second build of the image while the first still runs
            raise AssertionError("two builds of one image ran at once")
        if finished.is_set():
            raise RuntimeError("the second build")
        running.append(1)
        progress.plan(["FROM debian", "pip install six"], wire["key"])
        progress.step(1, "building")
        release.wait(30)
        progress.step(1, "building")  # an event after the request was cancelled
        running.clear()
        finished.set()
        raise RuntimeError("the step failed")

    service._build_sync = slow_build  # type: ignore[method-assign]
    wire = {"key": "im-3", "steps": [{"kind": "pip_install", "args": {}, "label": "pip install six"}]}

    async def scenario() -> list:
        request = asyncio.ensure_future(service.build(wire))
        while not service.building.list():
            await asyncio.sleep(0.01)
        request.cancel()
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(service.build(wire))  # must wait for the first thread
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.to_thread(finished.wait, 30)
        with pytest.raises(RuntimeError, match="the second build"):
            await second
        for _ in range(100):  # the thread's last callbacks
            await asyncio.sleep(0.01)
            if not service.building.list():
                break
        return service.building.list()

    assert asyncio.run(scenario()) == []
