"""The volume store on a real SQLite database and blob store: manifests, commits (atomic,
applied to the current head), the concurrency rules, the Python API's change sets, limits."""

from __future__ import annotations

import hashlib
import time

import pytest

from ferry._volume_files import (
    CHUNK_SIZE, DIR, FILE, LINK, V1_MAX_FILES, V2_MAX_DIR_ENTRIES, Entry, check_limits, clean_path,
    count_children, entry_from_wire, pack_manifest, unpack_manifest,
)
from ferry.exception import InvalidError, NotFoundError
from ferry.server.blobs import BlobStore
from ferry.server.store import Store
from ferry.server.volumes import Snapshot, VolumeStore, apply_changes, copy_changes, remove_changes


def open_volumes(home) -> tuple[Store, VolumeStore]:
    home.mkdir(parents=True, exist_ok=True)
    store = Store(home / "state.db")
    return store, VolumeStore(store, BlobStore(home / "blobs"))


@pytest.fixture
def volumes(tmp_path):
    store, vols = open_volumes(tmp_path)
    yield vols
    store.close()


def put_file(vols: VolumeStore, data: bytes, mtime: float = 1.0) -> Entry:
    """A file entry whose chunks are in the blob store."""
    chunks = tuple(vols.blobs.put(data[i:i + CHUNK_SIZE]) for i in range(0, len(data), CHUNK_SIZE))
    return Entry(FILE, len(data), 0o644, mtime, chunks)


def files_of(vols: VolumeStore, volume: dict) -> dict[str, bytes]:
    """path -> content of every file at the volume's head."""
    snapshot = vols.snapshot(vols.head(volume["id"])[1])
    return {p: b"".join(vols.blobs.get(d) for d in e.data) for p, e in snapshot.entries.items() if e.kind == FILE}


# -- manifests and paths ------------------------------------------------------------------
def test_paths_are_cleaned_relative_to_the_root_and_never_escape() -> None:
    assert clean_path("/a//b/./c/") == "a/b/c"
    assert clean_path("/") == ""
    with pytest.raises(InvalidError, match=r"must not contain '\.\.'"):
        clean_path("a/../../etc/passwd")
    with pytest.raises(InvalidError, match="root"):
        clean_path("/", allow_root=False)


def test_manifest_round_trips_every_kind_of_entry() -> None:
    entries = {
        "models": Entry(DIR, 0, 0o755, 1.5, None),
        "models/w.bin": Entry(FILE, 10, 0o600, 2.5, ("a" * 64, "b" * 64)),
        "models/latest": Entry(LINK, 0, 0o777, 3.0, "w.bin"),
    }
    assert unpack_manifest(pack_manifest(entries)) == entries
    path, entry = entry_from_wire(entries["models/w.bin"].wire("/models//w.bin"))
    assert (path, entry) == ("models/w.bin", entries["models/w.bin"])
    with pytest.raises(InvalidError, match="chunk list"):
        entry_from_wire(["x", FILE, 1, 0o644, 0.0, ["not-a-digest"]])


# -- volumes ------------------------------------------------------------------------------
def test_create_find_rename_delete(volumes: VolumeStore) -> None:
    created = volumes.create("models", version=2)
    assert volumes.get("models")["id"] == created["id"]
    with pytest.raises(InvalidError, match="already exists"):
        volumes.create("models")
    with pytest.raises(InvalidError, match="version 2 volume, but version=1"):
        volumes.get("models", version=1)
    with pytest.raises(NotFoundError, match=r"ferry volume create other.*create_if_missing=True"):
        volumes.get("other")
    assert volumes.get("other", create_if_missing=True)["version"] == 1
    with pytest.raises(InvalidError, match="Invalid volume name"):
        volumes.create("bad name")
    volumes.rename("models", "weights")
    assert volumes.get("weights")["id"] == created["id"]
    volumes.delete("weights")
    assert [v["name"] for v in volumes.list()] == ["other"]


def test_ephemeral_volumes_are_unlisted_and_dropped_on_restart(tmp_path) -> None:
    store, vols = open_volumes(tmp_path)
    ephemeral = vols.create(None, ephemeral=True)
    assert ephemeral["name"].startswith("ephemeral-") and vols.list() == []
    store.close()
    store, vols = open_volumes(tmp_path)
    assert store.volume(volume_id=ephemeral["id"]) is None
    store.close()


# -- commits ------------------------------------------------------------------------------
def test_commit_needs_the_chunks_and_moves_the_head(volumes: VolumeStore) -> None:
    vol = volumes.create("data")
    assert volumes.head(vol["id"]) == (0, volumes.empty)
    missing = Entry(FILE, 3, 0o644, 1.0, (hashlib.sha256(b"abc").hexdigest(),))
    with pytest.raises(InvalidError, match="was not uploaded"):
        volumes.commit(vol, {"a.txt": missing})
    with pytest.raises(InvalidError, match="claims 4 bytes"):
        volumes.commit(vol, {"a.txt": put_file(volumes, b"abc")._replace(size=4)})
    big = bytes(range(256)) * (CHUNK_SIZE // 256 + 10)  # two chunks
    result = volumes.commit(vol, {"dir/a.txt": put_file(volumes, b"abc"), "dir/big.bin": put_file(volumes, big)})
    assert (result["seq"], result["files"], result["bytes"]) == (1, 2, 3 + len(big))
    assert files_of(volumes, vol) == {"dir/a.txt": b"abc", "dir/big.bin": big}
    assert volumes.snapshot(result["hash"]).entries["dir"].kind == DIR  # parents are created


def test_a_prepared_but_unrecorded_commit_leaves_the_previous_head(tmp_path) -> None:
    """What a crash between writing the manifest and the commit row leaves: the old head."""
    store, vols = open_volumes(tmp_path)
    vol = vols.create("data")
    vols.commit(vol, {"one": put_file(vols, b"1")})
    prepared = vols.prepare(vol, vols.head(vol["id"]), {"two": put_file(vols, b"2")}, [])
    store.close()  # "killed" before record()
    store, vols = open_volumes(tmp_path)
    assert files_of(vols, vol) == {"one": b"1"}
    vols.record(prepared)  # (a record, had it happened, is durable)
    store.close()
    store, vols = open_volumes(tmp_path)
    assert files_of(vols, vol) == {"one": b"1", "two": b"2"} and vols.head(vol["id"])[0] == 2
    store.close()


def test_commits_apply_to_the_current_head_and_the_last_writer_of_a_file_wins(volumes: VolumeStore) -> None:
    vol = volumes.create("shared")
    volumes.commit(vol, {"same.txt": put_file(volumes, b"base")})
    # two writers started from the same head; each sends only what it changed
    first = {"a.txt": put_file(volumes, b"from a"), "same.txt": put_file(volumes, b"a wrote this")}
    second = {"b.txt": put_file(volumes, b"from b"), "same.txt": put_file(volumes, b"b wrote this")}
    volumes.commit(vol, first)
    volumes.commit(vol, second)
    assert files_of(volumes, vol) == {"a.txt": b"from a", "b.txt": b"from b", "same.txt": b"b wrote this"}


def test_a_deleted_directory_that_another_writer_filled_is_kept(volumes: VolumeStore) -> None:
    vol = volumes.create("dirs")
    volumes.commit(vol, {"d/old.txt": put_file(volumes, b"old")})
    volumes.commit(vol, {"d/new.txt": put_file(volumes, b"new")})  # writer B
    volumes.commit(vol, {}, ["d/old.txt", "d"])                     # writer A removed d as it knew it
    assert files_of(volumes, vol) == {"d/new.txt": b"new"}
    volumes.commit(vol, {}, ["d/new.txt", "d"])
    assert volumes.snapshot(volumes.head(vol["id"])[1]).entries == {}


def test_overwrite_modes() -> None:
    head = {"d": Entry(DIR, 0, 0o755, 1.0, None), "d/x": Entry(FILE, 0, 0o644, 1.0, ()),
            "f": Entry(FILE, 0, 0o644, 1.0, ())}
    new_file = Entry(FILE, 0, 0o600, 2.0, ())
    with pytest.raises(InvalidError, match="already exists.*force=True"):
        apply_changes(head, {"f": new_file}, [], overwrite="never", volume="v")
    assert apply_changes(head, {"f": new_file}, [], overwrite="files", volume="v")[0]["f"] == new_file
    with pytest.raises(InvalidError, match="is a directory"):
        apply_changes(head, {"d": new_file}, [], overwrite="files", volume="v")
    with pytest.raises(InvalidError, match="is a file"):
        apply_changes(head, {"f/inner": new_file}, [], overwrite="files", volume="v")
    # a container replaced the directory d with a file: what was in d goes with it
    entries, _ = apply_changes(head, {"d": new_file, "f/inner": new_file}, [], overwrite="always", volume="v")
    assert sorted(entries) == ["d", "f", "f/inner"] and entries["f"].kind == DIR


def test_remove_and_copy_follow_rm_and_cp() -> None:
    entries = {"d": Entry(DIR, 0, 0o755, 1.0, None), "d/x": Entry(FILE, 1, 0o644, 1.0, ("a" * 64,)),
               "d/e": Entry(DIR, 0, 0o755, 1.0, None), "d/e/y": Entry(FILE, 0, 0o644, 1.0, ()),
               "top": Entry(FILE, 0, 0o644, 1.0, ())}
    snap = Snapshot(entries, sorted(entries))
    with pytest.raises(InvalidError, match="recursive=True"):
        remove_changes(snap, "d", False, "v")
    assert sorted(remove_changes(snap, "d", True, "v")) == ["d", "d/e", "d/e/y", "d/x"]
    with pytest.raises(NotFoundError):
        remove_changes(snap, "nope", False, "v")
    assert copy_changes(snap, ["top"], "renamed", into=False, recursive=False, volume="v") == {"renamed": entries["top"]}
    assert set(copy_changes(snap, ["top"], "d", into=False, recursive=False, volume="v")) == {"d/top"}
    assert set(copy_changes(snap, ["d"], "c", into=False, recursive=True, volume="v")) == {"c", "c/x", "c/e", "c/e/y"}
    with pytest.raises(InvalidError, match="recursive=True"):
        copy_changes(snap, ["d"], "c", into=False, recursive=False, volume="v")
    with pytest.raises(InvalidError, match="into itself"):
        copy_changes(snap, ["d"], "d/e", into=False, recursive=True, volume="v")


# -- limits -------------------------------------------------------------------------------
def test_version_1_volumes_hold_at_most_500000_files(volumes: VolumeStore) -> None:
    vol = volumes.create("many")
    empty = Entry(FILE, 0, 0o644, 1.0, ())
    started = time.monotonic()
    puts = {f"d{i // 10_000}/f{i}": empty for i in range(V1_MAX_FILES)}
    assert volumes.commit(vol, puts)["files"] == V1_MAX_FILES
    with pytest.raises(InvalidError, match=r"500,001 files, over the limit of 500,000.*version=2"):
        volumes.commit(vol, {"one-more": empty})
    assert volumes.head(vol["id"])[0] == 1  # the refused commit changed nothing
    assert time.monotonic() - started < 120


def test_version_2_limits_entries_per_directory_and_file_size(volumes: VolumeStore) -> None:
    vol = volumes.create("wide", version=2)
    empty = Entry(FILE, 0, 0o644, 1.0, ())
    volumes.commit(vol, {f"wide/f{i}": empty for i in range(V2_MAX_DIR_ENTRIES)})
    with pytest.raises(InvalidError, match=r"/wide of volume 'wide' would hold 32,769 entries.*subdirectories"):
        volumes.commit(vol, {"wide/extra": empty})
    volumes.commit(vol, {"other/extra": empty})  # other directories are fine
    huge = {"model.bin": Entry(FILE, 1 << 40, 0o644, 1.0, ())}
    with pytest.raises(InvalidError, match="smaller than 1 TiB"):
        check_limits(2, huge, count_children(huge), "wide")
    check_limits(1, huge, count_children(huge), "v1")  # (version 1 has no per-file limit)
