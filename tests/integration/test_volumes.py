"""Volumes end to end, with a real server and real containers: what a container sees and when
(commit, reload, auto-commit on clean exit), reload with open files, read-only mounts, the
concurrency rules, limits raised inside a container, the Python API, ephemeral volumes, the
CLI (directory get included), early failure on a missing volume, a server SIGKILLed in the
middle of a large commit, the sandbox runtime, and the model-cache example.

Most tests use the session's process-runtime server (as root it binds each volume in a
private mount namespace); mount paths live under /tmp so the host only gains empty dirs."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

import ferry
from ferry._client import Client
from ferry.exception import ContainerCrashError, InvalidError, NotFoundError
from ferry.volume import FileEntryType

from ..conftest import REPO, ServerProcess, run_cli

MOUNT = "/tmp/ferry-test-volumes"
app = ferry.App("test-volumes")
shared = ferry.Volume.from_name("test-volumes-shared", create_if_missing=True)
at_exit = ferry.Volume.from_name("test-volumes-exit", create_if_missing=True)
wide = ferry.Volume.from_name("test-volumes-wide", create_if_missing=True, version=2)


def _write(root: str, files: dict[str, str]) -> None:
    for name, text in files.items():
        Path(root, name).parent.mkdir(parents=True, exist_ok=True)
        Path(root, name).write_text(text)


def _read(root: str, name: str) -> str | None:
    path = Path(root, name)
    return path.read_text() if path.exists() else None


@app.function(volumes={f"{MOUNT}/shared": shared}, max_containers=1)
def writer(files: dict[str, str], commit: bool = True) -> None:
    _write(f"{MOUNT}/shared", files)
    if commit:
        shared.commit()


@app.function(volumes={f"{MOUNT}/shared": shared}, max_containers=1)
def other_writer(files: dict[str, str], commit: bool = True) -> None:
    _write(f"{MOUNT}/shared", files)
    if commit:
        shared.commit()


@app.function(volumes={f"{MOUNT}/shared": shared}, max_containers=1)
def reader(name: str, reload: bool = False) -> str | None:
    if reload:
        shared.reload()
    return _read(f"{MOUNT}/shared", name)


@app.function(volumes={f"{MOUNT}/late": shared})
def late_reader(name: str) -> str | None:
    return _read(f"{MOUNT}/late", name)


@app.function(volumes={f"{MOUNT}/shared": shared})
def reload_holding_a_file(name: str) -> bool:
    _write(f"{MOUNT}/shared", {name: "held"})
    message = "reload() did not fail"
    with open(f"{MOUNT}/shared/{name}"):
        try:
            shared.reload()
        except InvalidError as error:
            message = str(error)
    shared.reload()  # closed now: works
    if "files in it are open" not in message or name not in message:
        raise AssertionError(message)
    return True


@app.function(volumes={f"{MOUNT}/ro": shared.read_only()})
def read_only_mount(name: str) -> dict:
    import errno

    try:
        Path(f"{MOUNT}/ro/nope.txt").write_text("no")
        write_error = None
    except OSError as error:
        write_error = errno.errorcode.get(error.errno or 0)
    try:
        shared.commit()
        commit_error = None
    except InvalidError as error:
        commit_error = str(error)
    shared.reload()
    return {"text": _read(f"{MOUNT}/ro", name), "write_error": write_error, "commit_error": commit_error}


@app.function(volumes={f"{MOUNT}/exit": at_exit})
def write_without_commit(name: str, text: str) -> None:
    _write(f"{MOUNT}/exit", {name: text})


@app.function(volumes={f"{MOUNT}/exit": at_exit}, retries=0)
def write_then_crash(name: str) -> None:
    _write(f"{MOUNT}/exit", {name: "lost"})
    os._exit(3)


@app.function(volumes={f"{MOUNT}/exit": at_exit})
def read_exit(name: str) -> str | None:
    return _read(f"{MOUNT}/exit", name)


@app.function(volumes={f"{MOUNT}/wide": wide}, timeout=300)
def crowd_one_directory(count: int) -> str:
    directory = Path(f"{MOUNT}/wide/crowded")
    directory.mkdir(exist_ok=True)
    for index in range(count):
        (directory / f"f{index}").touch()
    try:
        wide.commit()
    except InvalidError as error:
        import shutil

        shutil.rmtree(directory)  # (so the exit's auto-commit has nothing to refuse)
        return str(error)
    return "committed"


@app.function()
def read_path(path: str) -> str | None:
    return Path(path).read_text() if Path(path).exists() else None


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _client(server: ServerProcess) -> Client:
    return Client.from_env_sync()


# -- what a container sees, and when -------------------------------------------------------------
def test_writes_are_seen_by_other_containers_after_commit_and_reload(server):
    with app.run(show_logs=False):
        assert reader.remote("a.txt") is None                      # the reader's view: empty at its start
        writer.remote({"a.txt": "one"}, commit=False)
        assert reader.remote("a.txt", reload=True) is None          # written, not committed: invisible
        assert shared.listdir("/") == []
        writer.remote({"b.txt": "two"})                             # commits a.txt and b.txt
        assert sorted(e.path for e in shared.listdir("/")) == ["a.txt", "b.txt"]
        assert reader.remote("a.txt") is None                       # no reload: still the view of its start
        assert reader.remote("a.txt", reload=True) == "one"
        assert late_reader.remote("b.txt") == "two"                 # a container started later sees it at once


def test_concurrent_commits_to_different_files_both_land_and_the_last_writer_of_a_file_wins(server):
    with app.run(show_logs=False):
        writer.remote({}, commit=False)          # both containers start from the same head
        other_writer.remote({}, commit=False)
        writer.remote({"conc/x.txt": "from writer", "conc/same.txt": "writer"})
        other_writer.remote({"conc/y.txt": "from other", "conc/same.txt": "other"})  # never saw x.txt
        files = {e.path: b"".join(shared.read_file(e.path)).decode()
                 for e in shared.listdir("conc") if e.type == FileEntryType.FILE}
    assert files == {"conc/x.txt": "from writer", "conc/y.txt": "from other", "conc/same.txt": "other"}


def test_reload_with_an_open_file_in_the_volume_fails_clearly(server):
    with app.run(show_logs=False):
        assert reload_holding_a_file.remote("held.txt") is True


def test_read_only_mounts_refuse_writes_and_commits_but_reload(server):
    with shared.batch_upload(force=True) as batch:
        batch.put_file(io.BytesIO(b"readable"), "ro/file.txt")
    with app.run(show_logs=False):
        seen = read_only_mount.remote("ro/file.txt")
    assert seen["text"] == "readable"
    assert seen["write_error"] == "EROFS"
    assert "mounted read-only" in seen["commit_error"]


def test_containers_commit_on_clean_exit_but_not_when_they_crash(server):
    with app.run(show_logs=False):
        write_without_commit.remote("kept.txt", "committed at exit")
        with pytest.raises(ContainerCrashError):
            write_then_crash.remote("lost.txt")
    # app.run() returned: its containers have drained and ended (committing on the way out)
    assert [e.path for e in at_exit.listdir("/")] == ["kept.txt"]
    with app.run(show_logs=False):  # a later run reads it in a new container
        assert read_exit.remote("kept.txt") == "committed at exit"
        assert read_exit.remote("lost.txt") is None


def test_limits_are_enforced_on_commits_from_a_container(server):
    with app.run(show_logs=False):
        message = crowd_one_directory.remote(32_769)
    assert "would hold 32,769 entries, over the limit of 32,768 per directory" in message
    assert wide.listdir("/") == []


# -- the Python API ---------------------------------------------------------------------------
def test_python_api_upload_list_read_copy_remove_rename(server, tmp_path):
    name = _unique("test-volumes-api")
    vol = ferry.Volume.from_name(name, create_if_missing=True)
    local = tmp_path / "tree"
    (local / "sub").mkdir(parents=True)
    (local / "sub" / "leaf.txt").write_text("leaf")
    (local / "sub" / "to-leaf").symlink_to("leaf.txt")  # (as in the Hugging Face cache)
    (local / "top.txt").write_text("top")
    big = os.urandom(20 * 1024 * 1024 + 7)  # three chunks
    (tmp_path / "big.bin").write_bytes(big)
    with vol.batch_upload() as batch:
        batch.put_file(tmp_path / "big.bin", "/models/big.bin")
        batch.put_file(io.BytesIO(b"from memory"), "memory.txt")
        batch.put_directory(local, "/tree")
    assert [(e.path, e.type.name) for e in vol.listdir("/")] == [
        ("memory.txt", "FILE"), ("models", "DIRECTORY"), ("tree", "DIRECTORY")]
    assert sorted((e.path, e.type.name) for e in vol.iterdir("tree")) == [
        ("tree/sub", "DIRECTORY"), ("tree/sub/leaf.txt", "FILE"), ("tree/sub/to-leaf", "SYMLINK"),
        ("tree/top.txt", "FILE")]
    assert [e.path for e in vol.listdir("tree")] == ["tree/sub", "tree/top.txt"]
    assert vol.listdir("models/big.bin")[0].size == len(big)
    assert b"".join(vol.read_file("models/big.bin")) == big
    sink = io.BytesIO()
    assert vol.read_file_into_fileobj("/tree/sub/leaf.txt", sink) == 4 and sink.getvalue() == b"leaf"
    assert b"".join(vol.read_file("tree/sub/to-leaf")) == b"leaf"  # links are followed inside the volume

    with pytest.raises(InvalidError, match="already exists.*force=True"):
        with vol.batch_upload() as batch:
            batch.put_file(io.BytesIO(b"again"), "memory.txt")
    with vol.batch_upload(force=True) as batch:
        batch.put_file(io.BytesIO(b"replaced"), "memory.txt")
    assert b"".join(vol.read_file("memory.txt")) == b"replaced"

    vol.copy_files(["memory.txt"], "copies/")
    vol.copy_files(["tree"], "tree2", recursive=True)
    assert b"".join(vol.read_file("copies/memory.txt")) == b"replaced"
    assert b"".join(vol.read_file("tree2/sub/leaf.txt")) == b"leaf"
    with pytest.raises(InvalidError, match="recursive=True"):
        vol.remove_file("tree")
    vol.remove_file("tree", recursive=True)
    vol.remove_file("memory.txt")
    assert [e.path for e in vol.listdir("/")] == ["copies", "models", "tree2"]
    with pytest.raises(NotFoundError):
        vol.read_file("tree/top.txt").__next__()

    with app.run(show_logs=False):  # a container mounting it starts with the committed files
        mounted = read_path.with_options(volumes={f"{MOUNT}/api": vol})
        assert mounted.remote(f"{MOUNT}/api/tree2/top.txt") == "top"

    renamed = _unique("test-volumes-renamed")
    ferry.Volume.rename(name, renamed)
    assert [e.path for e in ferry.Volume.from_name(renamed).listdir("/")] == ["copies", "models", "tree2"]
    with pytest.raises(NotFoundError, match="ferry volume create"):
        ferry.Volume.from_name(name).listdir("/")
    ferry.Volume.delete(renamed)


def test_ephemeral_volumes_live_for_their_block(server):
    with ferry.Volume.ephemeral() as eph:
        with eph.batch_upload() as batch:
            batch.put_file(io.BytesIO(b"ephemeral"), "e.txt")
        with app.run(show_logs=False):
            mounted = read_path.with_options(volumes={f"{MOUNT}/eph": eph})
            assert mounted.remote(f"{MOUNT}/eph/e.txt") == "ephemeral"
        volume_id = eph.object_id
        assert [e.path for e in ferry.Volume.from_id(volume_id).listdir("/")] == ["e.txt"]
        assert eph.name not in [v["name"] for v in _client(server).request_sync("volume.list")]
    with pytest.raises(NotFoundError):
        ferry.Volume.from_id(volume_id).listdir("/")


# -- failing early ------------------------------------------------------------------------------
missing_app = ferry.App("test-volumes-missing")


@missing_app.function(volumes={f"{MOUNT}/missing": ferry.Volume.from_name("test-volumes-does-not-exist")})
def never_runs() -> None:
    raise AssertionError("a function whose volume is missing must not run")


def test_a_missing_volume_fails_app_run_ferry_run_and_ferry_deploy_before_anything_starts(server, tmp_path):
    with pytest.raises(NotFoundError) as raised:
        with missing_app.run(show_logs=False):
            pass
    assert "Volume 'test-volumes-does-not-exist' not found (used by never_runs)" in str(raised.value)
    assert "ferry volume create test-volumes-does-not-exist" in str(raised.value)
    script = tmp_path / "needs_volume.py"
    script.write_text(textwrap.dedent("""
        import ferry

        app = ferry.App("test-volumes-cli-missing")

        @app.function(volumes={"/data": ferry.Volume.from_name("test-volumes-cli-missing")})
        def f() -> str:
            return "ran"

        @app.local_entrypoint()
        def main():
            print(f.remote())
    """))
    for command in (["run", str(script)], ["deploy", str(script)]):
        result = run_cli(command, server, cwd=tmp_path, env={"COLUMNS": "300"})
        assert result.returncode == 1, result.stdout
        assert "Volume 'test-volumes-cli-missing' not found (used by f)" in result.stderr
        assert "create_if_missing=True" in result.stderr and "ran" not in result.stdout
    apps = _client(server).request_sync("app.list", all=True)
    assert not [a for a in apps if a["name"] in ("test-volumes-missing", "test-volumes-cli-missing")]


def _list_deployed_mount() -> list[str]:
    return sorted(os.listdir(f"{MOUNT}/deployed"))


def test_a_volume_deleted_under_a_deployed_app_fails_its_new_containers_naming_it(server):
    name, app_name = _unique("test-volumes-deleted"), _unique("test-volumes-deployed")
    vol = ferry.Volume.from_name(name, create_if_missing=True)
    with vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"x"), "kept.txt")
    deployed = ferry.App(app_name)
    deployed.function(volumes={f"{MOUNT}/deployed": vol}, serialized=True)(_list_deployed_mount)
    deployed.deploy()
    try:
        listing = ferry.Function.from_name(app_name, "_list_deployed_mount")
        assert listing.remote() == ["kept.txt"]
        assert _client(server).request_sync("volume.delete", name=name)["used_by"] == [app_name]
        with pytest.raises(NotFoundError, match=f"Volume {name!r} .mounted at {MOUNT}/deployed. was deleted"):
            listing.with_options(timeout=60).remote()  # a new container (of a variant)
    finally:
        _client(server).request_sync("app.stop", app=app_name)


# -- the CLI ------------------------------------------------------------------------------------
def test_volume_cli(server, tmp_path):
    name = _unique("test-volumes-cli")
    tree = tmp_path / "upload"
    (tree / "nested" / "deeper").mkdir(parents=True)
    (tree / "a.txt").write_text("alpha")
    (tree / "nested" / "b.txt").write_text("beta")
    (tree / "nested" / "deeper" / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (tree / "link").symlink_to("a.txt")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return run_cli(["volume", *args], server, env={"COLUMNS": "300"})

    assert cli("create", name, "--version", "2").returncode == 0
    assert "already exists" in cli("create", name).stderr
    put = cli("put", name, str(tree), "/data")
    assert put.returncode == 0 and "Uploaded 4 file(s)" in put.stdout, put.stderr
    assert "already exists" in cli("put", name, str(tree / "a.txt"), "/data/a.txt").stderr
    assert cli("put", name, str(tree / "a.txt"), "/data/", "--force").returncode == 0
    listed = cli("ls", name, "data")
    assert listed.stdout.split() == ["data/a.txt", "data/link", "data/nested/"]
    assert "data/nested/deeper/big.bin" in cli("ls", name, "/", "-r").stdout.split()
    assert name in cli("list").stdout

    target = tmp_path / "download"
    target.mkdir()
    got = cli("get", name, "data", str(target))
    assert got.returncode == 0, got.stderr
    for relative in ("a.txt", "nested/b.txt", "nested/deeper/big.bin"):
        assert (target / "data" / relative).read_bytes() == (tree / relative).read_bytes()
    assert os.readlink(target / "data" / "link") == "a.txt"
    assert "already exists locally" in cli("get", name, "data", str(target)).stderr
    assert cli("get", name, "data/nested/b.txt", "-").stdout == "beta"
    assert cli("get", name, "/", str(tmp_path / "all")).returncode == 0
    assert (tmp_path / "all" / "data" / "nested" / "b.txt").read_text() == "beta"

    assert cli("cp", name, "data/a.txt", "data/nested", "copies/").returncode == 1  # a directory needs -r
    assert cli("cp", "-r", name, "data/a.txt", "data/nested", "copies/").returncode == 0
    assert cli("ls", name, "copies").stdout.split() == ["copies/a.txt", "copies/nested/"]
    assert "recursive" in cli("rm", name, "data").stderr
    assert cli("rm", "-r", name, "data").returncode == 0
    assert cli("ls", name).stdout.split() == ["copies/"]
    assert "No file or directory 'data'" in cli("get", name, "data", str(tmp_path / "x")).stderr
    assert cli("delete", name, "--yes").returncode == 0
    assert "not found" in cli("ls", name).stderr


# -- crash safety -----------------------------------------------------------------------------
COPY_SCRIPT = """
import sys, time, ferry
vol = ferry.Volume.from_name(sys.argv[1])
vol.hydrate()
print("start", flush=True)
started = time.monotonic()
vol.copy_files(["l6"], "copy", recursive=True)
print("done", time.monotonic() - started, flush=True)
"""


def _start_copy(script: Path, server: ServerProcess) -> subprocess.Popen:
    """Run the big commit in another process; returns once its request is about to leave."""
    process = subprocess.Popen([sys.executable, str(script), "crash"], env=server.env(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None and process.stdout.readline() == "start\n"
    return process


def test_a_server_killed_during_a_large_commit_keeps_the_previous_or_the_new_commit(tmp_path, monkeypatch):
    """SIGKILL the server while a commit adding 64,000 entries to a 127,000-entry volume is in
    progress, at several moments; after each restart the volume is exactly as before the
    commit or exactly as after it, and takes new commits."""
    home = tmp_path / "home"
    server = ServerProcess.start(home)
    script = tmp_path / "commit_a_copy.py"
    script.write_text(COPY_SCRIPT)
    try:
        server.use(monkeypatch)
        vol = ferry.Volume.from_name("crash", create_if_missing=True)
        level = tmp_path / "l0"
        level.mkdir()
        for index in range(1000):
            (level / f"f{index:04d}").write_text(f"content {index}" if index % 100 == 0 else "")
        with vol.batch_upload() as batch:
            batch.put_directory(level, "l0")
        for depth in range(1, 7):  # l<depth> holds l<depth-1> twice: l6 has 64,000 files
            vol.copy_files([f"l{depth - 1}"], f"l{depth}/a", recursive=True)
            vol.copy_files([f"l{depth - 1}"], f"l{depth}/b", recursive=True)
        expected = sorted(e.path[len("l6/"):] for e in vol.listdir("l6", recursive=True))
        assert len([p for p in expected if "/f" in p]) == 64_000

        probe = _start_copy(script, server)  # how long the commit takes, request to answer
        assert probe.stdout is not None
        duration = float(probe.stdout.readline().split()[1])
        assert probe.wait(timeout=60) == 0
        vol.remove_file("copy", recursive=True)

        outcomes = []
        for fraction in (0.1, 0.3, 0.5, 0.7, 0.9, None):  # None: once the commit has been answered
            process = _start_copy(script, server)
            if fraction is None:
                assert process.wait(timeout=120) == 0
            else:
                time.sleep(duration * fraction)
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()
            process.wait(timeout=60)
            server = ServerProcess.start(home)
            server.use(monkeypatch)
            vol = ferry.Volume.from_name("crash")
            top = sorted(e.path for e in vol.listdir("/"))
            if top == ["l0", "l1", "l2", "l3", "l4", "l5", "l6"]:
                outcomes.append("previous")
                continue
            assert top == ["copy", "l0", "l1", "l2", "l3", "l4", "l5", "l6"], top
            copied = sorted(e.path[len("copy/"):] for e in vol.listdir("copy", recursive=True))
            assert copied == expected, f"a partial commit after a kill at {fraction} of the commit's time"
            assert b"".join(vol.read_file("copy/b/a/b/a/b/a/f0100")) == b"content 100"
            outcomes.append("new")
            vol.remove_file("copy", recursive=True)  # a commit after the restart works
        # kills while the server applied and wrote the commit leave the previous state (the commit row
        # is its last step); once answered, the new one
        assert outcomes[-1] == "new" and "previous" in outcomes, outcomes
    finally:
        server.stop(signal.SIGKILL)


def _sizes_of_mount(path: str) -> dict[str, int]:
    return {name: os.path.getsize(os.path.join(path, name)) for name in sorted(os.listdir(path))}


def test_the_host_chunk_cache_stays_under_its_size(tmp_path, monkeypatch):
    """FERRY_VOLUME_CACHE_SIZE of 3 MiB and two 2 MiB files: after filling a view, the host's
    cache keeps the chunks it can hold (least recently used go), and views are complete."""
    server = ServerProcess.start(tmp_path / "home", extra_env={"FERRY_VOLUME_CACHE_SIZE": str(3 * 1024 * 1024)})
    try:
        server.use(monkeypatch)
        vol = ferry.Volume.from_name("cached", create_if_missing=True)
        with vol.batch_upload() as batch:
            batch.put_file(io.BytesIO(os.urandom(2 * 1024 * 1024)), "a.bin")
            batch.put_file(io.BytesIO(os.urandom(2 * 1024 * 1024)), "b.bin")
        cache_app = ferry.App("test-volumes-cache")
        sizes = cache_app.function(volumes={f"{MOUNT}/cache": vol}, serialized=True)(_sizes_of_mount)
        cache = tmp_path / "home" / "volumes" / "cache"
        for _ in range(2):  # the second container refetches what the first one's trim removed
            with cache_app.run(show_logs=False):
                assert sizes.remote(f"{MOUNT}/cache") == {"a.bin": 2 * 1024 * 1024, "b.bin": 2 * 1024 * 1024}
            cached = [f for f in cache.rglob("*") if f.is_file()]
            assert len(cached) == 1 and sum(f.stat().st_size for f in cached) <= 3 * 1024 * 1024
    finally:
        server.stop()


# -- the sandbox runtime --------------------------------------------------------------------------
def test_volumes_in_sandbox_containers(on_sandbox):
    from .apps import volume_apps

    with volume_apps.app.run(show_logs=False):
        assert volume_apps.write.remote("hello.txt", "from a sandbox") == ["hello.txt"]
        seen = volume_apps.read_only.remote("hello.txt")
    assert seen["text"] == "from a sandbox"
    assert seen["write_error"] == "EROFS" and "mounted read-only" in seen["commit_error"]
    assert "/data" in seen["mounts"]
    assert b"".join(volume_apps.volume.read_file("hello.txt")) == b"from a sandbox"


def test_model_cache_example_downloads_once_then_loads_from_the_volume(on_sandbox):
    """HF_HOME in a volume: a file written by one function is read by another in a later run."""
    wide = {"COLUMNS": "300"}
    prefetch = run_cli(["run", "examples/model_cache.py::download_model"], on_sandbox, cwd=REPO, timeout=300,
                       env=wide)
    assert prefetch.returncode == 0, prefetch.stderr
    assert "was downloaded" in prefetch.stdout
    served = run_cli(["run", "examples/model_cache.py"], on_sandbox, cwd=REPO, timeout=300, env=wide)
    assert served.returncode == 0, served.stderr
    assert "model of 1,048,576 bytes, loaded from the volume cache" in served.stdout
    cached = run_cli(["volume", "ls", "model-cache", "hub", "-r"], on_sandbox)
    assert "hub/models--ferry-examples--tiny-model/snapshots/main/model.bin" in cached.stdout.split()


def test_image_run_function_mounts_volumes_and_commits_when_it_returns(on_sandbox):
    from .apps import volume_apps

    with volume_apps.app.run(show_logs=False):
        assert volume_apps.read_built.remote() == {"first.txt": "committed by the step",
                                                   "second.txt": "committed when the step returned"}
    assert [e.path for e in volume_apps.built.listdir("/")] == ["first.txt", "second.txt"]
