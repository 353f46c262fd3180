"""Blob garbage collection on its own: roots keep blobs, a grace period keeps fresh ones, and a
blob reported present to an uploader is fresh again."""

from __future__ import annotations

import os
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
