"""BuildsInProgress: what the dashboard lists as building now, from a build's progress events."""

from __future__ import annotations

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
