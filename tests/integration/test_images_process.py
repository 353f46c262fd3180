"""Images on the process runtime (the session's `server`): one venv per image, apt packages
checked against the host, and clear errors for steps that need an image filesystem."""

from __future__ import annotations

from pathlib import Path

import pytest

import ferry
from ferry.exception import InvalidError

from ..conftest import ServerProcess
from .apps import image_process


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
