# Host packages these tests need (Debian 12, as root): bubblewrap, mmdebstrap, uidmap (see
# scripts/test.sh), and network access to deb.debian.org and PyPI (builds install packages).
"""Images built for real on a sandbox server: every step, the layer cache, failures, local
files mounted or copied, `imports()`, Python versions, and the `ferry image` commands.

The images share their first layers (tests/integration/apps/image_steps.py), built once per
session in the sandbox server's FERRY_HOME; the Debian base root filesystems are cached per
machine (FERRY_BASE_ROOTFS_DIR).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import ferry
from ferry._client import Client
from ferry._sync import run_sync
from ferry.exception import ExecutionError, InvalidError

from ..conftest import REPO, ServerProcess, run_cli
from .apps import image_failing, image_imports_missing, image_steps

APPS = REPO / "tests" / "integration" / "apps"


def build(image: ferry.Image, *, force: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Build `image` with `image.build` (as `ferry image build` does); the result and the
    progress events the server pushed."""
    events: list[dict[str, Any]] = []

    async def go() -> dict[str, Any]:
        client = await Client.from_env()
        wire = image._wire()
        missing = await client.request("blob.missing", hashes=list(wire.blobs))
        for digest in missing:
            await client.request("blob.put", data=wire.blobs[digest], hash=digest)
        progress_id = f"test-{time.monotonic_ns()}"
        client.image_handlers[progress_id] = events.append
        try:
            return await client.request("image.build", image=wire.definition, force=force,
                                        progress_id=progress_id)
        finally:
            await asyncio.sleep(0.05)  # pushes sent before the reply are already delivered
            client.image_handlers.pop(progress_id, None)

    return run_sync(go()), events


def states(events: list[dict[str, Any]]) -> list[str]:
    """The final state of each step, in order."""
    final: dict[int, str] = {}
    for event in events:
        if event.get("event") == "step" and event["state"] != "building":
            final[event["index"]] = event["state"]
    return [final[i] for i in sorted(final)]


def test_every_build_step_takes_effect_in_the_container(on_sandbox: ServerProcess) -> None:
    with image_steps.app.run(show_logs=False):
        seen = image_steps.inspect_image.remote()
    assert seen["python"] == (3, 11)
    assert seen["idna"] == "3.6"                              # pip_install
    assert seen["jq"].startswith("jq-1.6")                    # apt_install
    assert seen["six"] == "1.16.0"                            # requirements (certifi, tomli, attrs: imported)
    assert seen["env"] == "hello from env"                    # env
    assert seen["cwd"] == "/app"                              # workdir
    assert (seen["marker"], seen["cache"]) == ("built", "ok")  # run_commands
    assert seen["run_function"] == "written at build time!"   # run_function(args=, kwargs=)
    assert seen["copied"] == ["data.txt", "requirements.txt"]  # add_local_dir(copy=True, ignore=)
    assert seen["copied_data"] == "from the copied directory"
    assert seen["requirements_copy"] == "six==1.16.0"         # add_local_file(copy=True)
    assert seen["pkgdemo"] == (41, 42, "/root/pkgdemo/__init__.py")  # add_local_python_source
    assert seen["live"] == "first version"                    # add_local_dir (mounted)
    assert seen["data"] == "from the copied directory"        # add_local_file (mounted)
    assert seen["paris_summer_offset"] == 7200                # zoneinfo has its data (tzdata)


def test_unchanged_image_is_not_rebuilt(on_sandbox: ServerProcess) -> None:
    first, _ = build(image_steps.every_step)
    again, events = build(image_steps.every_step)
    assert again["key"] == first["key"]
    assert states(events) == ["cached"] * len(states(events))
    assert len(states(events)) == len(image_steps.every_step.steps) + 1  # + the Ferry runtime layer


def test_changing_one_step_rebuilds_that_step_and_later_ones_only(on_sandbox: ServerProcess) -> None:
    build(image_failing.variant("one"))
    _, events = build(image_failing.variant("two"))
    # base, Ferry runtime, pip_install: cached; the changed run_commands and the env after it: built
    assert states(events) == ["cached", "cached", "cached", "built", "built"]


def test_force_build_rebuilds_every_layer_after_the_base(on_sandbox: ServerProcess, monkeypatch) -> None:
    image = image_failing.variant("forced")
    build(image)
    _, events = build(image, force=True)
    assert states(events) == ["built"] * 5
    monkeypatch.setenv("FERRY_FORCE_BUILD", "1")  # the client setting marks every step forced
    assert all(step["force"] for step in image._wire().definition["steps"])
    monkeypatch.delenv("FERRY_FORCE_BUILD")
    image = image_failing.base.run_commands("echo forced step").env({"AFTER": "1"})
    build(image)
    forced_step = image_failing.base.run_commands("echo forced step", force_build=True).env({"AFTER": "1"})
    _, events = build(forced_step)
    assert states(events) == ["cached", "cached", "cached", "built", "built"]


def test_failing_step_reports_command_exit_code_and_output_and_keeps_earlier_layers(
    on_sandbox: ServerProcess,
) -> None:
    with pytest.raises(ExecutionError) as info:
        with image_failing.app.run(show_logs=False):
            pass
    message = str(info.value)
    assert "step 4/4" in message
    assert "echo step output; echo boom >&2; exit 3" in message
    assert "exit code 3" in message
    assert "boom" in message and "step output" in message
    key = message.split("ferry image logs ")[1][:12]
    _, events = build(image_failing.base)  # the steps before the failure stay cached
    assert states(events) == ["cached", "cached", "cached"]
    logs = run_cli(["image", "logs", key], on_sandbox)
    assert logs.returncode == 0, logs.stderr
    assert "before the failure" in logs.stdout and "boom" in logs.stdout


def test_unknown_python_version_lists_the_available_ones(on_sandbox: ServerProcess) -> None:
    with pytest.raises(InvalidError) as info:
        build(ferry.Image.debian_slim(python_version="3.7"))
    message = str(info.value)
    assert "Python '3.7' is not available" in message
    assert "Debian ships 3.11 (bookworm), 3.13 (trixie)" in message
    assert "3.9 to 3.14 are installed from standalone builds" in message


def test_python_no_debian_ships_comes_from_a_standalone_build_or_says_what_was_tried(
    on_sandbox: ServerProcess,
) -> None:
    """Python 3.12 is installed with `uv python install` from python-build-standalone's releases.
    Where they are reachable the function runs on 3.12; where they are not (this machine reaches
    only PyPI and Debian), the build error says what was tried and which versions need no download."""
    try:
        with image_steps.py312_app.run(show_logs=False):
            assert image_steps.python_312_version.remote() == (3, 12)
    except ExecutionError as error:
        message = str(error)
        assert "`uv python install 3.12` failed" in message
        assert "Python 3.12 is not shipped by Debian" in message
        assert "GitHub's python-build-standalone releases" in message
        assert "Versions that need no download: 3.11, 3.13" in message
        assert "FERRY_PYTHON_INSTALL_MIRROR" in message


def test_python_3_13_image_runs_debian_trixie_python(on_sandbox: ServerProcess) -> None:
    with image_steps.py313_app.run(show_logs=False):
        assert image_steps.python_version.remote() == (3, 13)
        assert image_steps.paris_summer_offset.remote() == 7200


def test_mounted_local_files_change_without_a_rebuild(on_sandbox: ServerProcess) -> None:
    live = image_steps.MOUNT_DIR / "live.txt"
    live.write_text("first version")
    first, _ = build(image_steps.mounted_only)
    with image_steps.mounts_app.run(show_logs=False):
        assert image_steps.read_live.remote() == "first version"
    live.write_text("second version")
    again, events = build(image_steps.mounted_only)
    assert again["key"] == first["key"] and set(states(events)) == {"cached"}
    with image_steps.mounts_app.run(show_logs=False):
        assert image_steps.read_live.remote() == "second version"


def test_local_files_mounted_inside_a_mounted_directory(on_sandbox: ServerProcess) -> None:
    with image_steps.nested_app.run(show_logs=False):
        seen = image_steps.read_nested.remote()
    assert seen == {"outer": "outer", "inner": ["__init__.py", "helpers.py", "requirements.txt"],
                    "file": "six==1.16.0"}


def test_copied_local_files_are_part_of_the_cache_key() -> None:
    directory = image_steps.MOUNT_DIR
    (directory / "live.txt").write_text("one")
    image = ferry.Image.debian_slim().add_local_dir(directory, "/data", copy=True)
    before = image._wire().definition["key"]
    (directory / "live.txt").write_text("two")
    assert image._wire().definition["key"] != before
    mounted = ferry.Image.debian_slim().add_local_dir(directory, "/data")
    key = mounted._wire().definition["key"]
    (directory / "live.txt").write_text("three")
    assert mounted._wire().definition["key"] == key


def test_imports_only_raise_in_the_images_own_container(on_sandbox: ServerProcess) -> None:
    with image_steps.imports_app.run(show_logs=False):
        assert image_steps.idna_version.remote() == "3.6"
    with pytest.raises(Exception) as info:  # the module imported here; in its container it fails
        with image_imports_missing.app.run(show_logs=False):
            image_imports_missing.unreachable.remote()
    assert "package_that_exists_nowhere" in str(info.value)


def test_image_cli_build_list_logs_rm(on_sandbox: ServerProcess) -> None:
    build(image_failing.base)
    built = run_cli(["image", "build", str(APPS / "image_failing.py::base")], on_sandbox)
    assert built.returncode == 0, built.stderr
    assert "ready in" in built.stdout
    assert "(cached)" in built.stderr
    key = built.stdout.split("Image ")[1][:12]
    listed = run_cli(["image", "list"], on_sandbox)
    assert listed.returncode == 0, listed.stderr
    assert key in listed.stdout and "Disk use: layers" in listed.stdout
    logs = run_cli(["image", "logs", key], on_sandbox)
    assert "Successfully installed idna-3.6" in logs.stdout
    extra = image_failing.base.run_commands("echo removable")
    result, _ = build(extra)
    removed = run_cli(["image", "rm", result["key"][:12]], on_sandbox)
    assert removed.returncode == 0, removed.stderr
    assert f"Removed image {result['key'][:12]}" in removed.stdout
    _, events = build(image_failing.base)  # shared layers were kept
    assert set(states(events)) == {"cached"}
    _, events = build(extra)
    assert states(events)[-1] == "built"


def test_secrets_of_a_build_step_reach_only_that_step(on_sandbox: ServerProcess) -> None:
    with image_steps.secrets_app.run(show_logs=False):
        note, runtime_value = image_steps.token_note.remote()
    assert note == "token has 9 characters"
    assert runtime_value is None  # a build secret is not part of the image's environment
    for path in (on_sandbox.home / "images").rglob("*.json"):  # layer metadata, image records
        assert b"tok-12345" not in path.read_bytes()
