"""Blob garbage collection on its own: roots keep blobs, a grace period keeps fresh ones, and a
blob reported present to an uploader is fresh again."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from ferry._volume_files import DIR, FILE, Entry, pack_manifest
from ferry.server.blob_gc import Roots, census, collect
from ferry.server.blobs import BlobStore

HOUR = 3600.0


def _age(blobs: BlobStore, digest: str, seconds: float) -> None:
    path = blobs.root / digest[:2] / digest
    then = time.time() - seconds
    os.utime(path, (then, then))


def _put_old(blobs: BlobStore, data: bytes) -> str:
    digest = blobs.put(data)
    _age(blobs, digest, 2 * HOUR)
    return digest


def test_referenced_blobs_and_volume_chunks_stay_and_old_unreferenced_ones_go(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    code = _put_old(blobs, b"def f(): ...")
    payload = _put_old(blobs, b"large argument")
    chunk = _put_old(blobs, b"volume file data")
    old_chunk = _put_old(blobs, b"a file of an older commit")
    orphan = _put_old(blobs, b"nothing refers to this")
    fresh = blobs.put(b"uploaded a moment ago")
    manifest = blobs.put(pack_manifest({
        "dir": Entry(DIR, 0, 0o755, 0.0, None),
        "dir/file": Entry(FILE, len(b"volume file data"), 0o644, 0.0, (chunk,)),
    }))
    older = blobs.put(pack_manifest({"old": Entry(FILE, 25, 0o644, 0.0, (old_chunk,))}))
    _age(blobs, manifest, 2 * HOUR)
    _age(blobs, older, 2 * HOUR)
    images = tmp_path / "images"
    (images / "records").mkdir(parents=True)
    recipe = _put_old(blobs, b"requirements of an image step")
    (images / "records" / "key.json").write_text(f'{{"steps": [{{"requirements": ["{recipe}"]}}]}}')
    roots = Roots(values=[{"mount": {"files": {"app.py": code}}}, {"args": {"blob": payload}}],
                  manifests={manifest, older})

    dry = collect(blobs, roots, images, grace=HOUR, dry_run=True)
    assert dry["removed"] == 1 and blobs.has(orphan)

    report = collect(blobs, roots, images, grace=HOUR)
    assert report["removed"] == 1 and report["removed_bytes"] == len(b"nothing refers to this")
    assert report["recent_unreferenced"] == 1
    assert not blobs.has(orphan)
    for digest in (code, payload, chunk, old_chunk, manifest, older, fresh, recipe):
        assert blobs.has(digest), digest
    sizes = census(blobs, {manifest, older})
    assert sizes["volume_chunks"] == sum(blobs.size(d) or 0 for d in (chunk, old_chunk, manifest, older))


def test_a_blob_an_uploader_was_told_it_need_not_send_is_kept(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    reused = _put_old(blobs, b"the same file again")
    also_put = _put_old(blobs, b"uploaded again")
    assert blobs.missing([reused]) == []  # the client will refer to it without sending it
    blobs.put(b"uploaded again")
    report = collect(blobs, Roots(), tmp_path / "images", grace=HOUR)
    assert report["removed"] == 0 and blobs.has(reused) and blobs.has(also_put)
    assert collect(blobs, Roots(), tmp_path / "images", grace=0.0, now=time.time() + 1)["removed"] == 2


def test_leftovers_of_interrupted_writes_go_after_the_grace_period(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    digest = blobs.put(b"x")
    leftover = blobs.root / digest[:2] / ".tmp-crashed"
    leftover.write_bytes(b"half")
    then = time.time() - 2 * HOUR
    os.utime(leftover, (then, then))
    collect(blobs, Roots(values=[digest]), tmp_path / "images", grace=HOUR)
    assert not leftover.exists() and blobs.has(digest)


def test_materialised_mounts_no_root_names_go_unless_a_live_container_may_use_them(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    mounts = tmp_path / "mounts"
    live, dead, fresh = "a" * 64, "b" * 64, "c" * 64
    for name in (live, dead, fresh, "not-a-digest"):
        (mounts / name).mkdir(parents=True)
        (mounts / name / "app.py").write_text("code")
    then = time.time() - 2 * HOUR
    for name in (live, dead, "not-a-digest"):
        os.utime(mounts / name, (then, then))
    # a container that started before the dead mount was last used may still run from it
    draining = Roots(values=[{"mount": {"digest": live}}], oldest_container=then - 60)
    assert collect(blobs, draining, tmp_path / "images", grace=HOUR, mounts_root=mounts)["mounts_removed"] == 0
    roots = Roots(values=[{"mount": {"digest": live}}], oldest_container=time.time())
    report = collect(blobs, roots, tmp_path / "images", grace=HOUR, mounts_root=mounts)
    assert report["mounts_removed"] == 1
    assert sorted(p.name for p in mounts.iterdir()) == sorted([live, fresh, "not-a-digest"])


def test_payloads_of_stored_calls_are_roots(tmp_path: Path) -> None:
    from ferry.server.store import Store

    blobs = BlobStore(tmp_path / "blobs")
    argument = _put_old(blobs, b"a large argument of a spawned call")
    output = _put_old(blobs, b"its large output, not yet fetched")
    orphan = _put_old(blobs, b"the output of a call whose record is gone")
    store = Store(tmp_path / "state.db")
    store.insert_spawned("fc-1", "fu-1", None, {"blob": argument})
    store.finish_spawned("fc-1", {"status": "success", "idx": 0, "blob": output})
    report = collect(blobs, Roots(database=store.path), tmp_path / "images", grace=HOUR)
    assert report["removed"] == 1
    assert blobs.has(argument) and blobs.has(output) and not blobs.has(orphan)


def _aged(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_layer_tars_for_nodes_go_once_their_layer_is_gone_and_the_grace_period_passed(tmp_path: Path) -> None:
    from ferry.server.runtimes.ray.node_layers import LayerTars

    images = tmp_path / "images"
    tars = LayerTars(images / "node-tars")
    kept, removed, fresh = (images / "layers" / name for name in ("kept", "removed", "fresh"))
    for layer in (kept, removed, fresh):
        layer.mkdir(parents=True)
        (layer / "file").write_text(f"the layer {layer.name}")
    packed = {layer.name: tars.pack(layer) for layer in (kept, removed, fresh)}
    for name in ("kept", "removed"):
        _aged(tars.root / f"{packed[name]['digest']}.tar", 2 * HOUR)
    leftover = tars.root / ".packing-interrupted.tar"
    leftover.write_bytes(b"half a tar")
    _aged(leftover, 2 * HOUR)
    shutil.rmtree(removed)
    shutil.rmtree(fresh)
    blobs = BlobStore(tmp_path / "blobs")

    dry = collect(blobs, Roots(), images, grace=HOUR, dry_run=True)
    assert dry["node_tars_removed"] == 2 and (tars.root / f"{packed['removed']['digest']}.tar").is_file()

    report = collect(blobs, Roots(), images, grace=HOUR)
    assert report["node_tars_removed"] == 2
    assert report["node_tars_removed_bytes"] == packed["removed"]["size"] + len(b"half a tar")
    assert (tars.root / f"{packed['kept']['digest']}.tar").is_file()  # its layer exists
    assert not (tars.root / f"{packed['removed']['digest']}.tar").exists() and not leftover.exists()
    assert (tars.root / f"{packed['fresh']['digest']}.tar").is_file()  # within the grace period
    assert len(list(tars.index.glob("*.json"))) == 1  # only the kept layer's entry
    assert tars.pack(kept) == packed["kept"]  # still known: not packed again


def test_image_rm_removes_the_node_tars_of_the_layers_it_removed(tmp_path: Path) -> None:
    from ferry.server.images.builder import ImageService
    from ferry.server.runtimes.ray.node_layers import LayerTars

    service = ImageService(tmp_path, BlobStore(tmp_path / "blobs"), "ray", base_dir=tmp_path / "bases",
                           ca_bundle="", step_timeout=60.0)
    store = service.store
    layers = {}
    for key in ("aaaa1111", "bbbb2222"):
        layers[key] = store.layer_dir(f"layer-{key}")
        layers[key].mkdir(parents=True)
        (layers[key] / "file").write_text(key)
        (store.layers / f"layer-{key}.json").write_text("{}")
        (store.records / f"{key}.json").write_text(f'{{"key": "{key}", "layers": ["layer-{key}"]}}')
    tars = LayerTars(store.root / "node-tars")
    packed = {key: tars.pack(layer) for key, layer in layers.items()}

    assert service.remove(["aaaa"], set())["removed"] == ["aaaa1111"]
    assert not (tars.root / f"{packed['aaaa1111']['digest']}.tar").exists()
    assert (tars.root / f"{packed['bbbb2222']['digest']}.tar").is_file()
