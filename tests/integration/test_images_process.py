"""Images on the process runtime (the session's `server`): one venv per image, apt packages
checked against the host, clear errors for steps that need an image filesystem, and each
step's output kept for `ferry image logs`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import ferry
from ferry.exception import InvalidError

from ..conftest import ServerProcess, run_cli
from .apps import image_process

APPS = "tests/integration/apps"


def test_pip_install_env_workdir_and_python_source_in_a_venv(server: ServerProcess) -> None:
    with image_process.app.run(show_logs=False):
        seen = image_process.inspect_venv.remote()
    assert seen["six"] == "1.16.0"
    assert Path(seen["prefix"]).parent == server.home / "images" / "venvs"
    assert (seen["env"], seen["cwd"], seen["pkgdemo"]) == ("from the process runtime", "/tmp", 41)


def test_apt_install_names_the_packages_missing_on_the_host(server: ServerProcess) -> None:
    with pytest.raises(InvalidError) as info:
        with image_process.missing_apt.run(show_logs=False):
            pass
    message = str(info.value)
    assert "ferry-no-such-package is not installed on this host" in message
    assert "coreutils" not in message.split("host")[0]
    assert "apt-get install -y ferry-no-such-package" in message


@pytest.mark.parametrize("app, words", [
    (image_process.file_image, "cannot mount files at a path"),
    (image_process.commands_image, "run_commands() would change the host itself"),
])
def test_steps_needing_an_image_filesystem_are_refused(server: ServerProcess, app: ferry.App, words: str) -> None:
    with pytest.raises(InvalidError, match="sandbox runtime") as info:
        with app.run(show_logs=False):
            pass
    assert words in str(info.value)
    assert not Path("/should-not-exist").exists()


def test_unavailable_python_version_lists_the_hosts(server: ServerProcess) -> None:
    app = ferry.App("test-images-process-python", image=ferry.Image.debian_slim(python_version="3.4"))

    @app.function(serialized=True)
    def f() -> int:
        return 1

    with pytest.raises(InvalidError, match=r"Python 3.4 is not available .* Available versions: .*3\.11"):
        with app.run(show_logs=False):
            pass


def test_image_logs_keep_each_steps_output_also_of_a_failed_build(server: ServerProcess) -> None:
    built = run_cli(["image", "build", f"{APPS}/image_process.py::venv_image"], server)
    assert built.returncode == 0, built.stderr
    assert "Collecting six" not in built.stderr  # the build view is compact ...
    key = built.stdout.split("Image ")[1][:12]
    logs = run_cli(["image", "logs", key], server)
    assert logs.returncode == 0, logs.stderr
    assert "── step 2: pip_install six==1.16.0" in logs.stdout  # ... the output is kept
    assert "Successfully installed six-1.16.0" in logs.stdout or "six==1.16.0 in" in logs.stdout

    failed = run_cli(["image", "build", f"{APPS}/image_process.py::unreachable_package"], server)
    assert failed.returncode == 1
    key = failed.stderr.split("ferry image logs ")[1][:12]
    listed = json.loads(run_cli(["image", "list", "--json"], server).stdout)
    [record] = [r for r in listed["images"] if r["key"].startswith(key)]
    assert record["state"] == "failed"
    logs = run_cli(["image", "logs", key], server)
    assert "No matching distribution found for ferry-package-that-exists-nowhere" in logs.stdout
    removed = run_cli(["image", "rm", key], server)
    assert removed.returncode == 0, removed.stderr
    assert not (server.home / "images" / "venvs" / f"{record['key']}.logs").exists()
