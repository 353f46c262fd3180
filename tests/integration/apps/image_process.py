"""Apps for the process runtime's images (tests/integration/test_images_process.py): they run
in a venv without pytest, so they live here."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import ferry

FILES = Path(__file__).resolve().parent / "image_files"
sys.path.insert(0, str(FILES))

venv_image = (
    ferry.Image.debian_slim()
    .pip_install("six==1.16.0")
    .pip_install_from_requirements(FILES / "requirements.txt")
    .env({"GREETING": "from the process runtime"})
    .workdir("/tmp")
    .add_local_python_source("pkgdemo")
)
app = ferry.App("test-images-process", image=venv_image)
unreachable_package = ferry.Image.debian_slim().pip_install("ferry-package-that-exists-nowhere==1.0")


@app.function()
def inspect_venv() -> dict:
    import pkgdemo
    import six

    return {"six": six.__version__, "prefix": sys.prefix, "env": os.environ.get("GREETING"),
            "cwd": os.getcwd(), "pkgdemo": pkgdemo.VALUE}


missing_apt = ferry.App("test-images-process-apt",
                        image=ferry.Image.debian_slim().apt_install("coreutils", "ferry-no-such-package"))


@missing_apt.function()
def never() -> int:
    return 1


file_image = ferry.App("test-images-process-files",
                       image=ferry.Image.debian_slim().add_local_dir(FILES, remote_path="/app/files"))


@file_image.function()
def never_either() -> int:
    return 1


commands_image = ferry.App("test-images-process-commands",
                           image=ferry.Image.debian_slim().run_commands("touch /should-not-exist"))


@commands_image.function()
def never_at_all() -> int:
    return 1
