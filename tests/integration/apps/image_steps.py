"""Apps for the image tests (tests/integration/test_images_*.py). They run in sandboxes whose
images have no pytest, so they live here rather than in the test modules. Images share their
first layers so the session builds each layer once."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import ferry

FILES = Path(__file__).resolve().parent / "image_files"
sys.path.insert(0, str(FILES))  # add_local_python_source("pkgdemo") finds it here
MOUNT_DIR = Path(tempfile.mkdtemp(prefix="ferry-image-mount-"))  # the test writes files here
atexit.register(shutil.rmtree, MOUNT_DIR, True)
(MOUNT_DIR / "live.txt").write_text("first version")


def write_marker(text: str, *, suffix: str = "") -> None:
    """Runs at build time (Image.run_function)."""
    with open("/built_by_run_function.txt", "w") as handle:
        handle.write(text + suffix)


base = ferry.Image.debian_slim(python_version="3.11").pip_install("idna==3.6")

every_step = (
    base
    .apt_install("jq")
    .uv_pip_install("certifi==2024.2.2")
    .pip_install_from_requirements(FILES / "requirements.txt")
    .pip_install_from_pyproject(FILES / "pyproject.toml", optional_dependencies=["extra"])
    .env({"GREETING": "hello from env"})
    .workdir("/app")
    .run_commands("echo built > /app/marker.txt", "mkdir -p /cache && echo ok > /cache/ok")
    .run_function(write_marker, args=("written at build time",), kwargs={"suffix": "!"})
    .add_local_dir(FILES, remote_path="/app/copied", copy=True, ignore=["pkgdemo", "*.toml", "docker_context"])
    .add_local_file(FILES / "requirements.txt", "/app/requirements-copy.txt", copy=True)
    .add_local_python_source("pkgdemo", copy=True)
    .add_local_dir(MOUNT_DIR, remote_path="/mnt/live")
    .add_local_file(FILES / "data.txt", "/mnt/data.txt")
)

app = ferry.App("test-images-steps", image=every_step)


@app.function()
def inspect_image() -> dict:
    import subprocess

    import attrs  # noqa: F401 - pyproject optional group
    import certifi  # noqa: F401 - uv_pip_install
    import idna
    import pkgdemo
    import six
    import tomli  # noqa: F401 - pyproject dependency
    from pkgdemo.helpers import double

    return {
        "idna": idna.__version__,
        "six": six.__version__,
        "jq": subprocess.run(["jq", "--version"], capture_output=True, text=True).stdout.strip(),
        "env": os.environ.get("GREETING"),
        "cwd": os.getcwd(),
        "marker": Path("/app/marker.txt").read_text().strip(),
        "cache": Path("/cache/ok").read_text().strip(),
        "run_function": Path("/built_by_run_function.txt").read_text(),
        "copied": sorted(p.name for p in Path("/app/copied").iterdir()),
        "copied_data": Path("/app/copied/data.txt").read_text().strip(),
        "requirements_copy": Path("/app/requirements-copy.txt").read_text().strip(),
        "pkgdemo": (pkgdemo.VALUE, double(21), pkgdemo.__file__),
        "live": Path("/mnt/live/live.txt").read_text(),
        "data": Path("/mnt/data.txt").read_text().strip(),
        "python": sys.version_info[:2],
        "paris_summer_offset": _paris_summer_offset(),
    }


def _paris_summer_offset() -> float:
    """zoneinfo works in every image (the Ferry runtime layer brings tzdata)."""
    import datetime
    import zoneinfo

    summer = datetime.datetime(2024, 7, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    return summer.utcoffset().total_seconds()


mounted_only = ferry.Image.debian_slim(python_version="3.11").add_local_dir(MOUNT_DIR, remote_path="/mnt/live")
mounts_app = ferry.App("test-images-mounts", image=mounted_only)


@mounts_app.function()
def read_live() -> str:
    return Path("/mnt/live/live.txt").read_text()


# a directory, a directory inside it and a file inside that: each seen where it was put
OUTER_DIR = Path(tempfile.mkdtemp(prefix="ferry-image-outer-"))
atexit.register(shutil.rmtree, OUTER_DIR, True)
(OUTER_DIR / "outer.txt").write_text("outer")
(OUTER_DIR / "pkgdemo").mkdir()
(OUTER_DIR / "pkgdemo" / "hidden.txt").write_text("hidden by the inner directory")
nested = (ferry.Image.debian_slim(python_version="3.11")
          .add_local_dir(OUTER_DIR, remote_path="/mnt/outer")
          .add_local_dir(FILES / "pkgdemo", remote_path="/mnt/outer/pkgdemo")
          .add_local_file(FILES / "requirements.txt", remote_path="/mnt/outer/pkgdemo/requirements.txt"))
nested_app = ferry.App("test-images-nested-mounts", image=nested)


@nested_app.function()
def read_nested() -> dict[str, Any]:
    return {"outer": Path("/mnt/outer/outer.txt").read_text(), "inner": sorted(os.listdir("/mnt/outer/pkgdemo")),
            "file": Path("/mnt/outer/pkgdemo/requirements.txt").read_text().strip()}


# -- imports that exist only in the image --------------------------------------------------
with base.imports():
    import idna  # only in `base` (and images built on it)

other = ferry.Image.debian_slim(python_version="3.11").env({"OTHER": "1"})
with other.imports():
    import package_that_exists_nowhere  # noqa: F401 - swallowed: not this container's image

imports_app = ferry.App("test-images-imports")


@imports_app.function(image=base)
def idna_version() -> str:
    return idna.__version__


# -- Python 3.13 (Debian trixie) -----------------------------------------------------------
py313_app = ferry.App("test-images-py313", image=ferry.Image.debian_slim(python_version="3.13"))


@py313_app.function()
def python_version() -> tuple:
    return tuple(sys.version_info[:2])


@py313_app.function()
def paris_summer_offset() -> float:
    return _paris_summer_offset()


# -- Python 3.12: no Debian suite ships it, so it comes from a standalone build -------------
py312_app = ferry.App("test-images-py312", image=ferry.Image.debian_slim(python_version="3.12"))


@py312_app.function()
def python_312_version() -> tuple:
    return tuple(sys.version_info[:2])


# -- secrets of build steps ----------------------------------------------------------------
with_secret = base.run_commands(
    "echo \"token has ${#BUILD_TOKEN} characters\" > /token-length.txt",
    secrets=[ferry.Secret.from_dict({"BUILD_TOKEN": "tok-12345"})],
)
secrets_app = ferry.App("test-images-secrets", image=with_secret)


@secrets_app.function()
def token_note() -> tuple:
    return Path("/token-length.txt").read_text().strip(), os.environ.get("BUILD_TOKEN")
