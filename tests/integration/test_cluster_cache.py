"""The bound on a Ray node's cache (runtimes/ray/node_cache.py) on a real one-node cluster whose
FERRY_NODE_CACHE_MAX_GB is tiny, so that every entry no container uses is evicted when a
container starts or ends: two images used one after the other, the older one is evicted when
the second one's container starts, the one in use is kept, and a later call of the evicted
image builds it again and works.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .apps import cluster_prebuild
from .ray_cluster import module_cluster

pytest.importorskip("ray")


cluster, ray_server = module_cluster(("head", "--num-cpus", "2"),
                                     env={"head": {"FERRY_NODE_CACHE_MAX_GB": "0.000001"}})  # ~1 KB


def _evicted(cache: Path, name: str, timeout: float = 120) -> bool:
    """Until the node's eviction log names `name` (evictions run beside a container's start)."""
    journal = cache / "evictions.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if journal.is_file() and f"evicted {name} " in journal.read_text():
            return True
        time.sleep(0.2)
    return False


def test_the_least_recently_used_image_is_evicted_and_the_one_in_use_kept(ray_server, cluster):
    cache = cluster.nodes["head"].cache
    venvs = cache / "images" / "venvs"
    with cluster_prebuild.evicting.run(show_logs=False):
        built = sorted(p.name for p in venvs.iterdir() if (p / ".ferry-complete").is_file())
        assert len(built) == 2, built  # both images built when the app started
        b = cluster_prebuild.use_b.remote()  # its container stays (scaledown_window=600)
        key_b = Path(b["prefix"]).name
        (key_a,) = set(built) - {key_b}
        assert _evicted(cache, f"venv {key_a}"), (cache / "evictions.log").read_text()
        assert not (venvs / key_a).exists()  # the older one, unused: evicted
        assert (venvs / key_b / ".ferry-complete").is_file()  # in use: kept
        a = cluster_prebuild.use_a.remote()  # built again, and it works
        assert a["image"] == "a" and a["six"] == "1.16.0" and Path(a["prefix"]).name == key_a
        assert len((venvs / f"{key_a}.builds").read_text().splitlines()) == 2
        assert (venvs / key_b / ".ferry-complete").is_file()  # still in use: still kept
        assert f"venv {key_b}" not in (cache / "evictions.log").read_text()
    assert not list((cache / "home" / "volumes").glob("views/*/*"))  # (no volume view left behind)
