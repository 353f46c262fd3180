"""Memory snapshots (`enable_memory_snapshot=True`, `@enter(snap=True)`) with real containers,
on the process runtime and on the sandbox runtime: the snap hooks run once, into a template
that containers are forked from; the other hooks run in every container; secrets and GPUs are
not in the snapshot; a changed hook or image makes a new one, an unchanged program reuses it
across runs; a snapshot that cannot be made leaves the containers to start the ordinary way,
saying why once. On the sandbox runtime, containers forked from one template share no files,
/tmp, processes or network with each other or the host, and have no capability an ordinary
sandbox container lacks."""

from __future__ import annotations

import os
import shutil
import signal
import textwrap
from pathlib import Path

import pytest

import ferry
from ferry._client import Client
from ferry.server.runtimes.sandbox.ids import SANDBOX_IDS
from ferry.exception import ContainerCrashError, InvalidError, OutOfMemoryError

from ..conftest import ServerProcess, run_cli
from ._web import wait_for
from .apps import snapshot_sandbox_apps as sandbox_apps
from .apps.snapshot_apps import MARKS, FailsInSnapshot, Snapped, app
from .test_sandbox_isolation import host_loopback_port, other_namespace_server  # noqa: F401 - fixtures


@pytest.fixture
def marks():
    shutil.rmtree(MARKS, ignore_errors=True)
    yield MARKS
    shutil.rmtree(MARKS, ignore_errors=True)


def _marks(kind: str) -> set[int]:
    return {int(p.name.split("-")[1]) for p in MARKS.glob(f"{kind}-*")}


def test_containers_start_from_the_snapshot_and_run_only_the_other_hooks(server, marks):
    with app.run(show_logs=False):
        first = Snapped().info.remote()
        second = Snapped.with_options(timeout=120)().info.remote()  # another pool: another container
    assert first["pid"] != second["pid"]
    assert first["loaded_in"] == second["loaded_in"] not in (first["pid"], second["pid"])
    assert _marks("snap") == {first["loaded_in"]}                 # the snap hook ran once, in the template
    assert _marks("enter") == {first["pid"], second["pid"]}       # the other hook in every container
    assert (first["ready_in"], second["ready_in"]) == (first["pid"], second["pid"])
    assert first["table"] == second["table"] == 99 * 99           # state made in the snapshot
    assert first["session"] != second["session"]                  # each container its own session


def test_secrets_and_gpus_are_not_in_the_snapshot(server, marks):
    with app.run(show_logs=False):
        seen = Snapped().info.remote()
    assert seen["secret_at_snapshot"] is None and seen["secret"] == "s3cret"
    assert seen["cuda_at_snapshot"] == ""


def test_a_snapshot_that_cannot_be_made_leaves_the_ordinary_start_and_says_why_once(server):
    with app.run(show_logs=False):
        first = FailsInSnapshot().info.remote()
        second = FailsInSnapshot.with_options(timeout=120)().info.remote()
        logs = run_cli(["app", "logs", app.app_id], server)
    assert first["loaded_in"] == first["pid"] and second["loaded_in"] == second["pid"]  # hooks ran in each
    assert logs.returncode == 0, logs.stderr
    shown = logs.stdout + logs.stderr  # (container stderr lines go to stderr)
    assert shown.count("memory snapshot not used") == 1
    assert "this hook refuses to run into a snapshot" in shown


PROGRAM = '''
import os
import uuid
import ferry

app = ferry.App("test-snapshot-versions", image=ferry.Image.debian_slim().env({{"IMAGE_VERSION": "{image}"}}))


@app.cls(enable_memory_snapshot=True)
class Versioned:
    @ferry.enter(snap=True)
    def load(self):
        self.loaded_in = uuid.uuid4().hex  # (pids repeat in sandboxes)
        self.hook = "{hook}"

    @ferry.method()
    def loaded(self):
        return f"{{self.loaded_in}} {{self.hook}} {{os.environ['IMAGE_VERSION']}}"


@app.local_entrypoint()
def main():
    print("LOADED", Versioned().loaded.remote())
'''


def _run(server: ServerProcess, directory: Path, *, hook: str, image: str) -> tuple[str, str, str]:
    path = directory / "versioned.py"
    path.write_text(textwrap.dedent(PROGRAM.format(hook=hook, image=image)))
    result = run_cli(["run", str(path)], server)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("LOADED"))
    loaded_in, seen_hook, seen_image = line.split()[1:]
    return loaded_in, seen_hook, seen_image


def test_the_snapshot_is_reused_across_runs_until_a_hook_or_the_image_changes(server, tmp_path):
    first = _run(server, tmp_path, hook="one", image="1")
    again = _run(server, tmp_path, hook="one", image="1")
    assert again == first                                   # the same template, kept across runs
    changed_hook = _run(server, tmp_path, hook="two", image="1")
    assert changed_hook[1] == "two" and changed_hook[0] != first[0]
    changed_image = _run(server, tmp_path, hook="two", image="2")
    assert changed_image[2] == "2" and changed_image[0] not in (first[0], changed_hook[0])


# -- the sandbox runtime: templates are sandboxes whose children isolate themselves ---------

def test_on_the_sandbox_runtime_containers_start_from_the_snapshot_and_run_only_the_other_hooks(on_sandbox):
    with sandbox_apps.app.run(show_logs=False):
        first = sandbox_apps.Snapped().info.remote()
        second = sandbox_apps.Snapped.with_options(timeout=120)().info.remote()  # another container
    assert first["snapshot_token"] == second["snapshot_token"]      # the snap hook ran once, in the template
    assert first["container_token"] != second["container_token"]    # the other hook in every container
    assert first["table"] == second["table"] == 99 * 99             # state made in the snapshot
    assert first["snapshot_file"] == first["snapshot_token"]        # a file it wrote is in the container's root
    for seen in (first, second):                                    # each its own pid namespace
        assert seen["pid"] == 2 and seen["pids"] == [1, 2]          # (pid 1 reaps, as bubblewrap's init does)
        assert seen["uid"] == 0
    assert first["user_namespace"] != second["user_namespace"]      # and user namespace


def test_on_the_sandbox_runtime_containers_start_from_one_snapshot_at_once(on_sandbox):
    with sandbox_apps.app.run(show_logs=False):
        sandbox_apps.Snapped().info.remote()  # the template is ready
        calls = [sandbox_apps.Snapped.with_options(timeout=130 + n)().info.spawn() for n in range(4)]
        seen = [call.get(timeout=120) for call in calls]
    assert len({s["container_id"] for s in seen}) == 4                  # four containers, started together
    assert len({s["snapshot_token"] for s in seen}) == 1                # from one snapshot
    assert len({s["user_namespace"] for s in seen}) == 4
    assert all(s["pids"] == [1, 2] for s in seen)


def test_on_the_sandbox_runtime_containers_from_one_snapshot_share_no_files_tmp_or_processes(on_sandbox):
    with sandbox_apps.app.run(show_logs=False):
        first = sandbox_apps.Snapped().leave_traces.remote("a")
        second = sandbox_apps.Snapped.with_options(timeout=120)().leave_traces.remote("bb")
        third = sandbox_apps.Snapped.with_options(timeout=121)().leave_traces.remote("ccc")
        # each writable layer is on the host while its container runs, written by root inside
        written = list((on_sandbox.home / "sandbox").glob("snapshot-*/layers/*/upper/root/trace-*"))
        owners = {(p.stat().st_uid, p.stat().st_gid) for p in written}
    assert sorted(p.name for p in written) == ["trace-a", "trace-bb", "trace-ccc"]
    assert len({p.parents[2] for p in written}) == 3                # three layers
    assert owners == {(SANDBOX_IDS.base, SANDBOX_IDS.base)}          # not host root
    for seen in (first, second, third):
        assert seen["root"] == [] and seen["tmp"] == []
        assert not [c for c in seen["cmdlines"] if c.startswith("sleep")]  # no other container's process


def test_on_the_sandbox_runtime_secrets_are_not_in_the_snapshot(on_sandbox):
    with sandbox_apps.app.run(show_logs=False):
        seen = sandbox_apps.Snapped().info.remote()
        templates = _template_pids()
        assert templates, "the snapshot's template is not running"
        secret = sandbox_apps.SECRET.encode()
        for pid in templates:  # neither in its environment nor anywhere in its memory
            assert secret not in Path(f"/proc/{pid}/environ").read_bytes()
            assert not _memory_holds(pid, secret)
    assert seen["secret_at_snapshot"] is None and seen["secret"] == sandbox_apps.SECRET


def test_on_the_sandbox_runtime_a_container_from_a_snapshot_is_confined_like_any_other(
        on_sandbox, host_loopback_port, other_namespace_server):
    server_port = int(on_sandbox.url.rsplit(":", 1)[1])
    targets = [["127.0.0.1", host_loopback_port], ["127.0.0.1", server_port]]
    with sandbox_apps.app.run(show_logs=False):
        forked = sandbox_apps.Snapped().probe.remote(targets)
        fetched = sandbox_apps.Snapped().fetch.remote(other_namespace_server)  # outbound, through pasta
        ordinary = sandbox_apps.ordinary_probe.remote()
    bounding = (int(forked["caps"].pop("CapBnd"), 16), int(ordinary["caps"].pop("CapBnd"), 16))
    assert forked["caps"] == ordinary["caps"]                       # no capability more (nor less)
    assert bounding[0] & ~bounding[1] == 0                          # (and a bounding set no larger)
    assert forked["no_new_privs"] == ordinary["no_new_privs"] == "1"
    assert forked["hostname"] == ordinary["hostname"]
    assert "lo" in forked["interfaces"] and len(forked["interfaces"]) == 2  # its own network namespace
    assert forked[f"127.0.0.1:{host_loopback_port}"] == "error: ConnectionRefusedError"  # not the host's loopback
    assert forked[f"127.0.0.1:{server_port}"] == "error: ConnectionRefusedError"
    assert fetched == "hello from the other namespace"


def test_on_the_sandbox_runtime_exit_codes_and_memory_kills_are_reported(on_sandbox):
    with sandbox_apps.app.run(show_logs=False):
        with pytest.raises(ContainerCrashError, match="exited with code 3"):
            sandbox_apps.exits.remote("code")
        with pytest.raises(ContainerCrashError, match="SIGSEGV"):
            sandbox_apps.exits.remote("signal")
        with pytest.raises(OutOfMemoryError, match="memory limit of 200 MiB"):
            sandbox_apps.exits.remote("memory")


def test_on_the_sandbox_runtime_a_container_from_a_snapshot_stops_gracefully(on_sandbox):
    with ferry.Queue.ephemeral() as exits:
        with sandbox_apps.app.run(show_logs=False):
            token = sandbox_apps.Stopped(exits=exits.object_id).ping.remote()
        assert exits.get(timeout=120) == {"exited": token}  # SIGTERM reached it: @exit ran


def test_on_the_sandbox_runtime_block_network_leaves_a_snapshot_container_its_loopback_only(on_sandbox):
    with sandbox_apps.app.run(show_logs=False):
        seen = sandbox_apps.Offline().probe.remote()
    assert seen["pid"] == 2                                          # (forked from the snapshot)
    assert seen["interfaces"] == ["lo"] and seen["loopback"] == "connected"
    assert seen["outside"].startswith("error")


def test_on_the_sandbox_runtime_a_snapshot_that_cannot_be_made_leaves_the_ordinary_start_saying_why_once(
        on_sandbox):
    with app.run(show_logs=False):
        first = FailsInSnapshot().info.remote()
        second = FailsInSnapshot.with_options(timeout=120)().info.remote()
        logs = run_cli(["app", "logs", app.app_id], on_sandbox)
    assert first["token"] != second["token"]  # the hook ran in each container
    shown = logs.stdout + logs.stderr
    assert shown.count("memory snapshot not used") == 1
    assert "this hook refuses to run into a snapshot" in shown


def test_on_the_sandbox_runtime_containers_with_volumes_start_the_ordinary_way_saying_so_once(on_sandbox):
    with sandbox_apps.app.run(show_logs=False):
        assert sandbox_apps.with_volume.remote()
        assert sandbox_apps.with_volume.with_options(timeout=120).remote()  # another container
        logs = run_cli(["app", "logs", sandbox_apps.app.app_id], on_sandbox)
    shown = logs.stdout + logs.stderr
    assert shown.count("memory snapshot not used") == 1
    assert "containers with volumes are not started from a snapshot" in shown


def test_on_the_sandbox_runtime_the_snapshot_is_reused_until_a_hook_or_the_image_changes(on_sandbox, tmp_path):
    first = _run(on_sandbox, tmp_path, hook="one", image="1")
    again = _run(on_sandbox, tmp_path, hook="one", image="1")
    assert again == first
    changed_hook = _run(on_sandbox, tmp_path, hook="two", image="1")
    assert changed_hook[1] == "two" and changed_hook[0] != first[0]
    changed_image = _run(on_sandbox, tmp_path, hook="two", image="2")
    assert changed_image[2] == "2" and changed_image[0] not in (first[0], changed_hook[0])


def test_on_the_sandbox_runtime_a_template_that_ends_takes_its_containers_and_is_made_again(on_sandbox):
    client = Client.for_url(on_sandbox.url)
    with sandbox_apps.app.run(show_logs=False):
        first = sandbox_apps.Snapped().info.remote()
        running = lambda: {c["id"] for c in client.request_sync("container.list", app=sandbox_apps.app.name)}  # noqa: E731
        assert first["container_id"] in running()
        before = _template_pids()
        for pid in before:
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: first["container_id"] not in running(), timeout=60,
                 what="the container of the ended template to be gone")
        later = sandbox_apps.Snapped.with_options(timeout=122)().info.remote()
        after = _template_pids()
        logs = run_cli(["app", "logs", sandbox_apps.app.app_id], on_sandbox)
    assert before and after and not set(before) & set(after)                # a new template
    assert later["snapshot_token"] != first["snapshot_token"]               # its own snapshot
    assert "memory snapshot not used" not in logs.stdout + logs.stderr      # used, not bypassed


def _template_pids() -> list[int]:
    """Host pids of snapshot templates on the sandbox runtime (their zygote's Python)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"ferry.server.runtimes.zygote_process" in argv and b"/run/ferry/snapshot.json" in argv:
                found.append(int(entry.name))
    return [pid for pid in found if _parent(pid) not in found]  # not the containers it forked


def _parent(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("PPid:")[1].split()[0])


def _memory_holds(pid: int, needle: bytes) -> bool:
    """Whether the process's readable memory holds `needle` anywhere."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as memory:
        for line in maps:
            fields = line.split()
            if "r" not in fields[1] or (len(fields) > 5 and fields[5] in ("[vvar]", "[vsyscall]", "[vvar_vclock]")):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            try:
                memory.seek(start)
                if needle in memory.read(end - start):
                    return True
            except OSError:
                continue
    return False


def test_snapshot_options_are_checked():
    with pytest.raises(InvalidError, match="snap=...."):
        ferry.enter(snap="yes")
    with pytest.raises(InvalidError, match="enable_memory_snapshot= takes True or False"):
        ferry.App("snapshot-options").function(enable_memory_snapshot="yes")
