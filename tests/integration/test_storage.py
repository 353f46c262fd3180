"""Bounded storage with a real server and real containers: garbage collection keeps what a live
volume, a deployed app and the image cache need and deletes what nothing refers to; anonymous
secrets die with their app (and at start); log retention keeps the newest lines; `ferry server
status` reports space by kind; `server.gc` is for administrators only; a full disk during a
volume commit or an image build (a small tmpfs as FERRY_HOME) is a clear error and the server
keeps serving."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator

import msgpack
import pytest

import ferry
from ferry._client import Client
from ferry.exception import NotFoundError, ServerError

from ..conftest import ServerProcess, run_cli
from .apps import auth_apps, storage_build

MOUNT = "/tmp/ferry-test-storage"
SECRET_VALUE = "given-by-value-" + uuid.uuid4().hex[:8]

storage_app = ferry.App("test-storage")
kept_volume = ferry.Volume.from_name("test-storage-kept", create_if_missing=True)


@storage_app.function(volumes={f"{MOUNT}/kept": kept_volume})
def read_kept(path: str) -> str:
    return Path(f"{MOUNT}/kept", path).read_text()


logs_app = ferry.App("test-storage-logs")


@logs_app.function()
def chatter(lines: int) -> int:
    for index in range(lines):
        print(f"chatter line {index:05d}")
    return lines


@logs_app.function()
def leave_ephemeral_objects_open() -> dict[str, str]:
    """Ephemeral objects whose `with` blocks never end (the container's connection owns them)."""
    return {kind: make().__enter__().object_id
            for kind, make in (("dict", ferry.Dict.ephemeral), ("queue", ferry.Queue.ephemeral),
                               ("volume", ferry.Volume.ephemeral))}


secret_app = ferry.App("test-storage-secret")


@secret_app.function(secrets=[ferry.Secret.from_dict({"STORAGE_TOKEN": SECRET_VALUE})])
def token() -> str:
    return os.environ["STORAGE_TOKEN"]


@pytest.fixture(scope="module")
def storage_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose maintenance runs only on request, with no grace period (so a collection
    deletes every unreferenced blob) and a 2 KiB log budget per app."""
    proc = ServerProcess.start(tmp_path_factory.mktemp("ferry-storage-home"), extra_env={
        "FERRY_GC_GRACE_SECONDS": "0", "FERRY_MAINTENANCE_INTERVAL": "0",
        "FERRY_LOG_RETENTION_MB_PER_APP": str(2048 / 1024 / 1024)})
    yield proc
    proc.stop()


@pytest.fixture
def on_storage(storage_server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> Client:
    storage_server.use(monkeypatch)
    return Client.for_url(storage_server.url)


def _anonymous_secrets(home: Path) -> int:
    with sqlite3.connect(home / "state.db") as db:
        return db.execute("SELECT COUNT(*) FROM secrets WHERE anonymous=1").fetchone()[0]


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.lstat().st_size for p in root.rglob("*") if p.is_file()}


def _stored_digests(home: Path) -> set[str]:
    """Every SHA-256 digest the stored function definitions name (their code, their images)."""
    with sqlite3.connect(home / "state.db") as db:
        rows = db.execute("SELECT definition FROM functions").fetchall()
    text = json.dumps([msgpack.unpackb(row[0], raw=False) for row in rows], default=repr)
    return set(re.findall(r"\b[0-9a-f]{64}\b", text))


def test_collection_keeps_live_volumes_deployed_code_and_images_and_deletes_the_rest(
        storage_server: ServerProcess, on_storage: Client) -> None:
    client = on_storage
    with kept_volume.batch_upload(force=True) as batch:
        batch.put_file(io.BytesIO(b"kept through garbage collection"), "keep.txt")
    doomed_name = f"test-storage-doomed-{uuid.uuid4().hex[:6]}"
    doomed = ferry.Volume.from_name(doomed_name, create_if_missing=True)
    with doomed.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"only in a deleted volume " + uuid.uuid4().bytes), "gone.txt")
    doomed_chunks = [d for e in [client.request_sync("volume.read", name=doomed_name, path="gone.txt")] for d in e["data"]]
    ferry.Volume.delete(doomed_name)
    orphan = client.request_sync("blob.put", data=b"uploaded and never used " + uuid.uuid4().bytes)
    storage_app.deploy(name="test-storage")
    named = _stored_digests(storage_server.home)  # (some are keys of images and mounts, not blobs)
    code = named - set(client.request_sync("blob.missing", hashes=sorted(named)))
    assert code, "the deployed definitions name their code's blobs"
    images_before = _files(storage_server.home / "images")

    dry = json.loads(run_cli(["server", "gc", "--dry-run", "--json"], storage_server).stdout)
    assert dry["dry_run"] and dry["blobs"]["removed"] >= 3
    assert client.request_sync("blob.missing", hashes=[orphan, *doomed_chunks]) == []  # a dry run deletes nothing

    done = run_cli(["server", "gc"], storage_server)
    assert done.returncode == 0, done.stderr
    assert "deleted" in done.stdout and "Blobs and volume chunks" in done.stdout
    assert set(client.request_sync("blob.missing", hashes=[orphan, *doomed_chunks])) == {orphan, *doomed_chunks}
    assert client.request_sync("blob.missing", hashes=sorted(code)) == []
    assert _files(storage_server.home / "images") == images_before  # layers and venvs are not the collector's
    # the deployed function's first container starts after the collection: its code and its
    # volume's files come out of what was kept
    assert ferry.Function.from_name("test-storage", "read_kept").remote("keep.txt") == "kept through garbage collection"
    run_cli(["app", "stop", "test-storage"], storage_server)


def test_anonymous_secrets_die_with_their_app(storage_server: ServerProcess, on_storage: Client) -> None:
    home = storage_server.home
    with secret_app.run(show_logs=False):
        assert token.remote() == SECRET_VALUE
        assert _anonymous_secrets(home) == 1
    assert _anonymous_secrets(home) == 0  # app.run() ended: its app stopped, the secret went with it
    secret_app.deploy(name="test-storage-secret")
    assert ferry.Function.from_name("test-storage-secret", "token").remote() == SECRET_VALUE
    run_cli(["server", "gc"], storage_server)
    assert _anonymous_secrets(home) == 1  # a deployed app keeps its secret
    stopped = run_cli(["app", "stop", "test-storage-secret"], storage_server)
    assert stopped.returncode == 0, stopped.stderr
    assert _anonymous_secrets(home) == 0


def test_anonymous_secrets_no_app_refers_to_go_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    own = ServerProcess.start(tmp_path / "home")
    try:
        own.use(monkeypatch)
        secret_app.deploy(name="test-storage-secret")
        own.stop(signal.SIGKILL)
        assert _anonymous_secrets(own.home) == 1
        with sqlite3.connect(own.home / "state.db") as db:  # the app was stopped, its secret left behind
            db.execute("UPDATE apps SET state='stopped', stopped=0 WHERE name='test-storage-secret'")
        own = ServerProcess.start(own.home)
        assert _anonymous_secrets(own.home) == 0
    finally:
        own.stop()


def test_ephemeral_objects_of_a_stopped_app_are_gone(storage_server: ServerProcess, on_storage: Client) -> None:
    with logs_app.run(show_logs=False):
        ids = leave_ephemeral_objects_open.remote()
        assert ferry.Dict.from_id(ids["dict"]).len() == 0  # alive while the app runs
    # (deleted when the server sees the stopped container's connection close)
    _wait_until_gone(lambda: ferry.Dict.from_id(ids["dict"]).len())
    _wait_until_gone(lambda: ferry.Queue.from_id(ids["queue"]).len())
    _wait_until_gone(lambda: ferry.Volume.from_id(ids["volume"]).listdir("/"))


def _wait_until_gone(use, timeout: float = 30.0) -> None:
    """Wait until `use()` raises NotFoundError (the object was deleted)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            use()
        except NotFoundError:
            return
        time.sleep(0.05)
    raise AssertionError(f"still there after {timeout} s")


def test_log_retention_keeps_the_newest_lines_of_an_app(storage_server: ServerProcess, on_storage: Client) -> None:
    with logs_app.run(show_logs=False):
        assert chatter.remote(500) == 500
        app_id = logs_app.app_id
    report = on_storage.request_sync("server.gc")
    assert report["log_lines_deleted"] > 0
    logs = run_cli(["app", "logs", app_id], storage_server)
    assert logs.returncode == 0, logs.stderr
    lines = [line for line in logs.stdout.splitlines() if "chatter line" in line]
    assert lines and lines[-1].endswith("chatter line 00499")
    assert not any(line.endswith("chatter line 00000") for line in lines)
    assert len("\n".join(lines)) < 4096  # about the 2 KiB budget (each line also carries its prefix)


def test_server_status_reports_space_by_kind(storage_server: ServerProcess, on_storage: Client) -> None:
    with kept_volume.batch_upload(force=True) as batch:
        batch.put_file(io.BytesIO(b"counted as a volume chunk"), "counted.txt")
    status = run_cli(["server", "status", "--json"], storage_server)
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["running"] and data["url"] == storage_server.url  # the existing keys stay
    space = data["space"]
    assert set(space) == {"state_db", "logs", "blobs", "volume_chunks", "image_layers", "base_rootfs", "venvs"}
    assert space["state_db"] > 0 and space["volume_chunks"] > 0 and all(v >= 0 for v in space.values())
    text = run_cli(["server", "status"], storage_server).stdout
    assert "space used:" in text and "volume chunks:" in text


def test_a_container_is_refused_garbage_collection(server: ServerProcess) -> None:
    with auth_apps.app.run(show_logs=False):
        outcomes = auth_apps.try_requests.remote(["server.gc"])
    kind, message = outcomes["server.gc"]
    assert kind == "PermissionDeniedError" and "not permitted from inside a container" in message


# -- a full disk ---------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 MiB tmpfs of the test's own (unmounted at the end)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_during_a_volume_commit_is_a_clear_error_and_the_server_keeps_serving(
        small_disk: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    own = ServerProcess.start(small_disk / "home")
    try:
        own.use(monkeypatch)
        volume = ferry.Volume.from_name("full-disk", create_if_missing=True)
        with volume.batch_upload() as batch:
            batch.put_file(io.BytesIO(b"before the disk filled up"), "old.txt")
        with pytest.raises(ServerError) as raised:
            with volume.batch_upload() as batch:
                batch.put_file(io.BytesIO(os.urandom(64 * 1024 * 1024)), "too-big.bin")
        message = str(raised.value)
        assert "disk is full" in message and str(own.home / "blobs") in message, message
        assert "ferry server gc" in message
        # the server keeps serving, and the volume keeps its old state
        assert [e.path for e in ferry.Volume.from_name("full-disk").listdir("/")] == ["old.txt"]
        assert b"".join(ferry.Volume.from_name("full-disk").read_file("old.txt")) == b"before the disk filled up"
        assert Client.for_url(own.url).request_sync("server.status")["url"] == own.url
        assert not list((own.home / "blobs").rglob(".tmp-*"))  # nothing half written stays
        with pytest.raises(NotFoundError):
            b"".join(ferry.Volume.from_name("full-disk").read_file("too-big.bin"))
    finally:
        own.stop()



def test_a_full_disk_during_an_image_build_is_a_clear_error_and_the_server_keeps_serving(
        small_disk: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    own = ServerProcess.start(small_disk / "home")
    filler = small_disk / "filler"
    try:
        own.use(monkeypatch)
        free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
        with open(filler, "wb") as handle:  # leave 4 MiB: less than the image's venv needs
            handle.write(b"\0" * (free - 4 * 1024 * 1024))
        with pytest.raises(ServerError) as raised:
            with storage_build.app.run(show_logs=False):
                pass
        message = str(raised.value)
        assert "disk is full" in message and str(own.home) in message, message
        assert Client.for_url(own.url).request_sync("server.status")["url"] == own.url
        filler.unlink()
        with storage_build.app.run(show_logs=False):  # with space again, the same image builds
            assert storage_build.six_version.remote() == "1.16.0"
    finally:
        own.stop()


def test_the_maintenance_pass_runs_on_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    own = ServerProcess.start(tmp_path / "home", extra_env={"FERRY_MAINTENANCE_INTERVAL": "0.5",
                                                            "FERRY_GC_GRACE_SECONDS": "0"})
    try:
        own.use(monkeypatch)
        client = Client.for_url(own.url)
        orphan = client.request_sync("blob.put", data=b"collected by the periodic pass " + uuid.uuid4().bytes)
        path = own.home / "blobs" / orphan[:2] / orphan
        deadline = time.monotonic() + 60
        while path.exists() and time.monotonic() < deadline:  # waits for the pass, not a fixed time
            time.sleep(0.1)
        assert not path.exists()
        assert client.request_sync("server.status")["url"] == own.url
    finally:
        own.stop()
