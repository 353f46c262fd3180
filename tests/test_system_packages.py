"""scripts/system-packages.sh (run by install.sh and test.sh): as root with apt-get it runs
`apt-get update` then installs what is missing; without root it prints the one command to
run; without apt-get it names the packages; it never fails. apt-get and the tools it looks
for are stand-ins in a private PATH: the machine's packages are never touched."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "system-packages.sh"
BASICS = ("bash", "id", "grep", "dpkg-query", "cat")


def _bin(tmp_path: Path, *, tools: tuple[str, ...] = (), apt: bool = True, uid: int | None = None) -> Path:
    """A PATH directory with the basics, stand-ins for `tools`, and a recording apt-get."""
    directory = tmp_path / "bin"
    directory.mkdir()
    for name in BASICS:
        (directory / name).symlink_to(shutil.which(name))
    for name in tools:
        (directory / name).write_text("#!/bin/sh\nexit 0\n")
        (directory / name).chmod(0o755)
    if uid is not None:  # `id -u` as another user would answer
        (directory / "id").unlink()
        (directory / "id").write_text(f"#!/bin/sh\necho {uid}\n")
        (directory / "id").chmod(0o755)
    if apt:
        log = tmp_path / "apt.log"
        for name in ("apt-get", "apt-cache"):
            (directory / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\nexit 0\n')
            (directory / name).chmod(0o755)
    return directory


def _run(path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([shutil.which("bash"), str(SCRIPT), *extra], env={"PATH": str(path)},
                          capture_output=True, text=True, timeout=60)


ALL_TOOLS = ("bwrap", "mmdebstrap", "newuidmap", "pasta")
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


@pytest.mark.skipif(not KEYRING.exists(), reason="checks the keyring file of the machine")
def test_nothing_missing_does_nothing(tmp_path: Path) -> None:
    done = _run(_bin(tmp_path, tools=ALL_TOOLS, uid=0))
    assert done.returncode == 0 and done.stderr == "" and not (tmp_path / "apt.log").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the install branch is taken as root")
def test_as_root_it_updates_then_installs_what_is_missing(tmp_path: Path) -> None:
    done = _run(_bin(tmp_path, tools=("bwrap", "newuidmap"), uid=0))
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / "apt.log").read_text().splitlines()
    assert calls[0] == "apt-get update -qq"
    assert calls[-1].startswith("apt-get install -y -qq mmdebstrap passt")


def test_without_root_it_prints_the_one_command(tmp_path: Path) -> None:
    done = _run(_bin(tmp_path, tools=("bwrap",), uid=1000))
    assert done.returncode == 0
    assert "sudo apt-get update && sudo apt-get install -y mmdebstrap uidmap passt" in done.stderr
    assert not (tmp_path / "apt.log").exists()


def test_without_apt_it_names_the_packages(tmp_path: Path) -> None:
    done = _run(_bin(tmp_path, tools=("bwrap", "newuidmap", "pasta"), apt=False, uid=0))
    assert done.returncode == 0 and "needs: mmdebstrap" in done.stderr


def test_install_and_test_scripts_share_it() -> None:
    assert "bash scripts/system-packages.sh" in (REPO / "scripts" / "install.sh").read_text()
    assert "bash scripts/system-packages.sh iproute2" in (REPO / "scripts" / "test.sh").read_text()
