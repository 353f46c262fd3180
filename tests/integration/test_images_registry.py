"""`Image.from_registry` with a local OCI archive the test writes itself (no registry is
reachable here), and `Image.from_dockerfile` on top of it, built and run in the sandbox."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry._client import Client
from ferry._image import Image
from ferry._sync import run_sync
from ferry.exception import ExecutionError

from ..conftest import ServerProcess
from ..server.images.oci_archive import layer_from_dir, layer_from_files, write_oci_archive
from .apps import image_registry


@pytest.fixture
def archive(on_sandbox: ServerProcess) -> Iterator[Path]:
    """An OCI archive: the bookworm base root filesystem, then a layer adding a file and
    deleting /etc/motd (a whiteout)."""
    run_sync(_build_base())  # the Debian root filesystem the archive is made of exists after this
    rootfs = Path(os.environ["FERRY_BASE_ROOTFS_DIR"]) / "rootfs-bookworm"
    top = layer_from_files({"etc/ferry-oci-marker": b"from the oci archive\n", "etc/motd": None})
    write_oci_archive(image_registry.ARCHIVE, [layer_from_dir(rootfs), top], workdir="/srv",
                      env=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "OCI_VAR=yes"])
    yield image_registry.ARCHIVE
    image_registry.ARCHIVE.unlink(missing_ok=True)


async def _build_base() -> None:
    client = await Client.from_env()
    await client.request("image.build", image=Image.debian_slim(python_version="3.11")._wire().definition)


def test_from_registry_oci_archive_and_from_dockerfile(archive: Path) -> None:
    with image_registry.app.run(show_logs=False):
        seen = image_registry.from_archive.remote()
        built = image_registry.from_dockerfile.remote()
    assert seen == {"marker": "from the oci archive\n", "motd": False, "env": "yes", "cwd": "/srv", "idna": "3.6"}
    assert built == {"cwd": "/srv/app", "greeting": "hello from a Dockerfile RUN", "copied": "copied by COPY",
                     "conf": "setting = 1", "env": ("/srv/app", "test", "yes")}


def test_registry_image_is_pulled_with_skopeo_or_fails_saying_why(on_sandbox: ServerProcess) -> None:
    """No registry is reachable from the test machines: the build must fail with an error
    that names skopeo or the registry (where one is reachable, the image must run)."""
    image = Image.from_registry("python:3.11-slim")

    async def go() -> dict:
        client = await Client.from_env()
        return await client.request("image.build", image=image._wire().definition)

    try:
        result = run_sync(go())
    except ExecutionError as error:
        message = str(error)
        assert "step 1/" in message and "python:3.11-slim" in message
        assert "skopeo" in message
    else:
        assert result["python_version"] == "3.11"
