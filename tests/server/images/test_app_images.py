"""The images of an app's functions, built when it starts (images/rpc.build_functions): each
distinct image once; one after the other on one machine, all at once on a Ray cluster (each on
its nodes), where a failure still fails the start only once every build has ended."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from ferry.exception import ExecutionError
from ferry.server.images.rpc import build_functions


class _Images:
    """The image service's calls build_functions makes; a build of `blocked` waits for the
    other builds to have started."""

    def __init__(self, fail: str | None = None) -> None:
        self.fail = fail
        self.started: list[str] = []
        self.ended: list[str] = []
        self.all_started = asyncio.Event()

    def resolve_secrets(self, wire: dict[str, Any], tag: str) -> dict[str, Any]:
        return wire

    async def build(self, wire: dict[str, Any], *, emit: Any, configs: list[dict[str, Any]]) -> None:
        self.started.append(wire["key"])
        if len(self.started) == 2:
            self.all_started.set()
        if wire["key"] == "a":  # ends only once b's build has begun: b must not wait for it
            await asyncio.wait_for(self.all_started.wait(), 2)
        self.ended.append(wire["key"])
        if wire["key"] == self.fail:
            raise ExecutionError(f"step of {wire['key']} failed")


def _functions() -> list[dict[str, Any]]:
    image = lambda key: {"key": key, "steps": []}  # noqa: E731
    return [{"tag": tag, "definition": {"image": image(key), "config": {}}}
            for tag, key in (("f", "a"), ("g", "b"), ("h", "a"))]


def _server(runtime: str, images: _Images) -> Any:
    return SimpleNamespace(images=images, runtime=SimpleNamespace(name=runtime))


def test_a_clusters_images_build_at_once_and_each_once():
    images = _Images()
    specs = asyncio.run(build_functions(_server("ray", images), _functions(), conn=None, progress_id=None))
    assert images.started == ["a", "b"] and sorted(images.ended) == ["a", "b"]
    assert [s["definition"]["image"]["key"] for s in specs] == ["a", "b", "a"]


def test_on_one_machine_images_build_one_after_the_other():
    images = _Images()
    with pytest.raises(asyncio.TimeoutError):  # a's build waits for b's, which never starts meanwhile
        asyncio.run(build_functions(_server("process", images), _functions(), conn=None, progress_id=None))
    assert images.started == ["a"]


def test_a_failed_image_on_a_cluster_fails_the_start_after_every_build_ended():
    images = _Images(fail="a")
    with pytest.raises(ExecutionError, match="step of a failed"):
        asyncio.run(build_functions(_server("ray", images), _functions(), conn=None, progress_id=None))
    assert sorted(images.ended) == ["a", "b"]
