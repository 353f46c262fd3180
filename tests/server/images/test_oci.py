"""Unpacking OCI images: layers in order, whiteouts, and paths kept inside the root."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from ferry.exception import InvalidError
from ferry.server.images import oci

from .oci_archive import layer_from_files, write_oci_archive


def _tar(entries: list[tarfile.TarInfo], contents: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info in entries:
            data = (contents or {}).get(info.name, b"")
            if info.isfile():
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buffer.getvalue()


def _entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def test_layers_apply_in_order_with_whiteouts_and_opaque_directories(tmp_path: Path) -> None:
    archive = write_oci_archive(tmp_path / "img.tar", [
        layer_from_files({"etc/a": b"a", "etc/b": b"b", "data/old": b"old", "keep/x": b"x"}),
        layer_from_files({"etc/b": None, "data/.wh..wh..opq": b"", "data/new": b"new"}, gzipped=False),
    ], env=["PATH=/usr/bin", "A=1"], workdir="/srv", cmd=["python3", "-V"])
    root = tmp_path / "root"
    root.mkdir()
    config = oci.unpack(f"oci-archive:{archive}", root, lambda line: None)
    assert (root / "etc/a").read_text() == "a" and not (root / "etc/b").exists()
    assert sorted(os.listdir(root / "data")) == ["new"]
    assert (root / "keep/x").exists()
    assert config.env == {"PATH": "/usr/bin", "A": "1"} and config.workdir == "/srv"
    assert config.cmd == ["python3", "-V"]
    assert oci.identity(f"oci-archive:{archive}").startswith("sha256:")
    assert oci.identity(f"oci-archive:{archive}:latest") == oci.identity(f"oci-archive:{archive}")
    with pytest.raises(InvalidError, match="no image tagged 'v2'"):
        oci.identity(f"oci-archive:{archive}:v2")


def test_symlinks_never_lead_outside_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    layer = tmp_path / "layer.tar"
    layer.write_bytes(_tar([
        _entry("escape", tarfile.SYMTYPE, str(outside)),        # absolute: means <root>/<outside>
        _entry("up", tarfile.SYMTYPE, "../../.."),
        _entry("escape/file"), _entry("up/file2"),
    ], {"escape/file": b"1", "up/file2": b"2"}))
    oci.apply_layer(layer, "application/vnd.oci.image.layer.v1.tar", root)
    assert list(outside.iterdir()) == []
    assert (root / str(outside).lstrip("/") / "file").read_text() == "1"
    assert (root / "file2").read_text() == "2"


def test_registry_references_are_fully_qualified_for_skopeo() -> None:
    assert oci.registry_ref("python:3.11-slim") == "docker://docker.io/library/python:3.11-slim"
    assert oci.registry_ref("org/img:1") == "docker://docker.io/org/img:1"
    assert oci.registry_ref("ghcr.io/org/img:1") == "docker://ghcr.io/org/img:1"
    assert oci.registry_ref("localhost:5000/img") == "docker://localhost:5000/img"
