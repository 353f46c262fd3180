"""The bound on a Ray node's cache (runtimes/ray/node_cache.py), on real files: least recently
used entries go first, pinned entries (held by another live process) and venvs being built stay,
a dead process's pin counts for nothing, and uncommitted volume views are never touched."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

from ferry.server.images.venv_recipe import COMPLETE
from ferry.server.runtimes.ray.node_cache import EVICTIONS_LOG, Pin, evict, record_venv_size, sweep


def _venv(root: Path, key: str, size: int, used: float) -> Path:
    venv = root / "images" / "venvs" / key
    (venv / "lib").mkdir(parents=True)
    (venv / "lib" / "data").write_bytes(b"x" * size)
    (venv / COMPLETE).write_text("")
    record_venv_size(venv.parent, key)
    os.utime(venv, (used, used))
    return venv


def _blob(root: Path, digest: str, size: int, used: float) -> Path:
    path = root / "blobs" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"b" * size)
    os.utime(path, (used, used))
    return path


def test_least_recently_used_go_first_down_to_the_target(tmp_path):
    now = time.time()
    old = _venv(tmp_path, "old", 400_000, now - 300)
    middle = _blob(tmp_path, "a" * 64, 300_000, now - 200)
    new = _venv(tmp_path, "new", 300_000, now - 100)
    evicted = evict(tmp_path, 900_000)  # 1,000,000 held: down to 80 % of the bound
    assert [e.name for e in evicted] == ["venv old"]
    assert not old.exists() and middle.exists() and new.exists()
    assert "evicted venv old (400,000 bytes" in (tmp_path / EVICTIONS_LOG).read_text()
    sweep(tmp_path)
    assert sorted(p.name for p in (tmp_path / "images" / "venvs").iterdir()) == [
        "new", "new.size", "old.lock"]  # (the lock file stays: others may hold it open)
    assert evict(tmp_path, 900_000) == []  # under the bound now


def test_entries_pinned_by_a_live_process_and_venvs_being_built_stay(tmp_path):
    now = time.time()
    pinned = _venv(tmp_path, "pinned", 100_000, now - 300)
    building = _venv(tmp_path, "building", 100_000, now - 200)
    free = _blob(tmp_path, "c" * 64, 100_000, now - 100)
    views = tmp_path / "home" / "volumes" / "views" / "ct-1" / "0"  # a running container's volume
    views.mkdir(parents=True)
    (views / "uncommitted").write_bytes(b"v" * 100_000)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from ferry.server.runtimes.ray.node_cache import Pin; p = Pin(Path(sys.argv[1])); "
         "p.add(['venv pinned']); print('pinned', flush=True); sys.stdin.read()", str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "pinned"
        with open(tmp_path / "images" / "venvs" / "building.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # a container checking or building it
            evicted = evict(tmp_path, 1)
        assert [e.name for e in evicted] == [f"blob {'c' * 64}"]
        assert pinned.exists() and building.exists() and not free.exists()
        assert (views / "uncommitted").exists()
    finally:
        holder.stdin.close()
        holder.wait()
    # its process gone, its pin counts for nothing (and is removed)
    assert {e.name for e in evict(tmp_path, 1)} == {"venv pinned", "venv building"}
    assert not any((tmp_path / "pins").iterdir())
    assert (views / "uncommitted").exists()


def test_a_pin_marks_its_entries_used_and_its_own_process_keeps_them(tmp_path):
    now = time.time()
    venv = _venv(tmp_path, "mine", 100_000, now - 1000)
    other = _blob(tmp_path, "d" * 64, 100_000, now - 500)
    pin = Pin(tmp_path)
    pin.add(["venv mine"])
    assert venv.stat().st_mtime > now - 10  # touched: used now
    assert [e.name for e in evict(tmp_path, 1)] == [f"blob {'d' * 64}"]  # (the same process's pin holds too)
    assert venv.exists() and not other.exists()
    pin.release()
    assert [e.name for e in evict(tmp_path, 1)] == ["venv mine"]
    assert evict(tmp_path, 0) == []  # 0: no bound


def test_a_node_zygote_pins_its_venv_while_it_lives(tmp_path, monkeypatch):
    import asyncio

    from ferry.server.runtimes.ray.node_agent import NodeZygote

    monkeypatch.setenv("FERRY_NODE_CACHE", str(tmp_path))
    venv = _venv(tmp_path, "zygote-venv", 200_000, time.time() - 300)
    (venv / "bin").mkdir()
    (venv / "bin" / "python").symlink_to(sys.executable)
    other = _venv(tmp_path, "unused-venv", 200_000, time.time() - 200)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}

    async def run() -> None:
        zygote = NodeZygote(str(venv / "bin" / "python"), env)
        await zygote.start()
        assert zygote.state == "ready", zygote.failure
        try:
            assert [e.name for e in evict(tmp_path, 1)] == ["venv unused-venv"]  # not the zygote's
            assert venv.is_dir() and not other.exists()
        finally:
            await zygote.stop()
        assert [e.name for e in evict(tmp_path, 1)] == ["venv zygote-venv"]  # its zygote has ended

    asyncio.run(run())
    assert not venv.exists()


def test_unpacked_layers_of_sandbox_nodes_are_bounded_and_pinned_ones_stay(tmp_path):
    from ferry.server.runtimes.ray.node_cache import record_layer_size

    now = time.time()
    layers = {}
    for name, used in (("a", now - 300), ("b", now - 200), ("c", now - 100)):
        layer = tmp_path / "layers" / (name * 64)
        (layer / "usr").mkdir(parents=True)
        (layer / "usr" / "data").write_bytes(b"l" * 300_000)
        record_layer_size(layer.parent, layer.name)
        os.utime(layer, (used, used))
        layers[name] = layer
    (tmp_path / "layers" / ".incoming").mkdir()  # a fetch unpacking: not an entry
    pin = Pin(tmp_path)
    pin.add([f"layer {'a' * 64}"])  # a running container's (or a fetch's) layer, though the oldest
    try:
        evicted = evict(tmp_path, 800_000)  # 900,000 held: down to 640,000
        assert [e.name for e in evicted] == [f"layer {'b' * 64}"] and evicted[0].size == 300_000
        assert layers["a"].is_dir() and not layers["b"].exists() and layers["c"].is_dir()
        assert not (tmp_path / "layers" / f"{'b' * 64}.size").exists()
        sweep(tmp_path)
        assert sorted(p.name for p in (tmp_path / "layers").iterdir()) == [
            ".incoming", "a" * 64, f"{'a' * 64}.size", "c" * 64, f"{'c' * 64}.size"]
    finally:
        pin.release()
    # let go: its last use is now, so it goes after the other
    assert [e.name for e in evict(tmp_path, 1)] == [f"layer {'c' * 64}", f"layer {'a' * 64}"]


def test_a_spare_sandbox_pins_its_layers_until_it_has_ended(tmp_path, monkeypatch):
    import asyncio

    from ferry.server.runtimes.ray import node_spares

    layer = tmp_path / "layers" / ("d" * 64)
    (layer / "usr").mkdir(parents=True)
    (layer / "usr" / "data").write_bytes(b"l" * 100_000)
    os.utime(layer, (time.time() - 300, time.time() - 300))
    launch = {"sandbox": {"layers": [{"digest": "d" * 64}], "mounts": []}, "server_url": "ferry://127.0.0.1:9"}

    async def spec(*args, **kwargs):  # (what the sandbox would be: not started here)
        return None

    monkeypatch.setattr(node_spares, "sandbox_spec", spec)
    monkeypatch.setattr(node_spares, "limits_cgroup", lambda *args: None)

    async def run() -> None:
        prepared = await node_spares.NodeSpares(1)._prepare(launch, tmp_path, "node", "spare-1", 0)
        try:
            assert evict(tmp_path, 1) == [] and layer.is_dir()  # its spare holds it
        finally:
            await asyncio.to_thread(prepared.cleanup)
        assert [e.name for e in evict(tmp_path, 1)] == [f"layer {'d' * 64}"]  # the spare has ended

    asyncio.run(run())
