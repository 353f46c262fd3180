"""Images from OCI archives and Dockerfiles (tests/integration/test_images_registry.py). The
test writes the archive (from the Debian base root filesystem plus a layer of its own) at
ARCHIVE before running these apps."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import ferry

ARCHIVE = Path(tempfile.gettempdir()) / f"ferry-test-oci-{os.getpid()}.tar"
CONTEXT = Path(__file__).resolve().parent / "image_files" / "docker_context"

registry_image = ferry.Image.from_registry(f"oci-archive:{ARCHIVE}").pip_install("idna==3.6")
dockerfile_image = ferry.Image.from_dockerfile(CONTEXT / "Dockerfile", build_args={"BASE": f"oci-archive:{ARCHIVE}"})

app = ferry.App("test-images-registry")


@app.function(image=registry_image)
def from_archive() -> dict:
    import idna

    return {"marker": Path("/etc/ferry-oci-marker").read_text(), "motd": os.path.exists("/etc/motd"),
            "env": os.environ.get("OCI_VAR"), "cwd": os.getcwd(), "idna": idna.__version__}


@app.function(image=dockerfile_image)
def from_dockerfile() -> dict:
    return {"cwd": os.getcwd(), "greeting": Path("greeting.txt").read_text().strip(),
            "copied": Path("app.txt").read_text().strip(), "conf": Path("/etc/app-conf/app.ini").read_text().strip(),
            "env": (os.environ.get("APP_HOME"), os.environ.get("MODE"), os.environ.get("OCI_VAR"))}
