"""Memory snapshots (`enable_memory_snapshot=True`, `@enter(snap=True)`) with real containers:
the snap hooks run once, into a template that containers are forked from; the other hooks run
in every container; secrets and GPUs are not in the snapshot; a changed hook or image makes a
new one, an unchanged program reuses it across runs; a snapshot that cannot be made leaves the
containers to start the ordinary way, saying why once."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

import ferry
from ferry.exception import InvalidError

from ..conftest import ServerProcess, run_cli
from .apps.snapshot_apps import MARKS, FailsInSnapshot, Snapped, app


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
import ferry

app = ferry.App("test-snapshot-versions", image=ferry.Image.debian_slim().env({{"IMAGE_VERSION": "{image}"}}))


@app.cls(enable_memory_snapshot=True)
class Versioned:
    @ferry.enter(snap=True)
    def load(self):
        self.loaded_in = os.getpid()
        self.hook = "{hook}"

    @ferry.method()
    def loaded(self):
        return f"{{self.loaded_in}} {{self.hook}} {{os.environ['IMAGE_VERSION']}}"


@app.local_entrypoint()
def main():
    print("LOADED", Versioned().loaded.remote())
'''


def _run(server: ServerProcess, directory: Path, *, hook: str, image: str) -> tuple[int, str, str]:
    path = directory / "versioned.py"
    path.write_text(textwrap.dedent(PROGRAM.format(hook=hook, image=image)))
    result = run_cli(["run", str(path)], server)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("LOADED"))
    loaded_in, seen_hook, seen_image = line.split()[1:]
    return int(loaded_in), seen_hook, seen_image


def test_the_snapshot_is_reused_across_runs_until_a_hook_or_the_image_changes(server, tmp_path):
    first = _run(server, tmp_path, hook="one", image="1")
    again = _run(server, tmp_path, hook="one", image="1")
    assert again == first                                   # the same template, kept across runs
    changed_hook = _run(server, tmp_path, hook="two", image="1")
    assert changed_hook[1] == "two" and changed_hook[0] != first[0]
    changed_image = _run(server, tmp_path, hook="two", image="2")
    assert changed_image[2] == "2" and changed_image[0] not in (first[0], changed_hook[0])


def test_on_the_sandbox_runtime_containers_start_the_ordinary_way_saying_so_once(on_sandbox):
    with app.run(show_logs=False):
        first = FailsInSnapshot().info.remote()
        FailsInSnapshot.with_options(timeout=120)().info.remote()
        logs = run_cli(["app", "logs", app.app_id], on_sandbox)
    assert first["loaded_in"] == first["pid"]
    assert (logs.stdout + logs.stderr).count("the sandbox runtime does not make memory snapshots yet") == 1


def test_snapshot_options_are_checked():
    with pytest.raises(InvalidError, match="snap=...."):
        ferry.enter(snap="yes")
    with pytest.raises(InvalidError, match="enable_memory_snapshot= takes True or False"):
        ferry.App("snapshot-options").function(enable_memory_snapshot="yes")
