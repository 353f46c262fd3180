"""Writing OCI image archives for tests (no registry is reachable here): a layout of layer
tarballs, a config and a manifest, tarred up as `oci-archive` (what `skopeo copy ...
oci-archive:` produces)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path


def _blob(blobs: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return f"sha256:{digest}", len(data)


def layer_from_dir(root: Path) -> bytes:
    """An uncompressed layer holding the directory tree `root` (GNU tar keeps owners, modes)."""
    return subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", "-", "."],
                          check=True, capture_output=True).stdout


def layer_from_files(files: dict[str, bytes | None], *, gzipped: bool = True) -> bytes:
    """A layer of `path: content` entries; content None writes a whiteout deleting `path`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, content in files.items():
            if content is None:
                parent, _, name = path.rpartition("/")
                path, content = f"{parent}/.wh.{name}" if parent else f".wh.{name}", b""
            info = tarfile.TarInfo(path)
            info.size = len(content)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    data = buffer.getvalue()
    return gzip.compress(data, mtime=0) if gzipped else data


def write_oci_archive(dest: Path, layers: list[bytes], *, env: list[str], workdir: str = "",
                      cmd: list[str] | None = None, tag: str = "latest") -> Path:
    work = dest.with_suffix(".layout")
    blobs = work / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (work / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    descriptors, diff_ids = [], []
    for data in layers:
        gz = data[:2] == b"\x1f\x8b"
        digest, size = _blob(blobs, data)
        descriptors.append({"mediaType": "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if gz else ""),
                            "digest": digest, "size": size})
        raw = gzip.decompress(data) if gz else data
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
    config = {"architecture": "amd64", "os": "linux",
              "config": {"Env": env, "WorkingDir": workdir, "Cmd": cmd or ["python3"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    config_digest, config_size = _blob(blobs, json.dumps(config).encode())
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": config_digest, "size": config_size},
                "layers": descriptors}
    manifest_digest, manifest_size = _blob(blobs, json.dumps(manifest).encode())
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
        "size": manifest_size, "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    (work / "index.json").write_text(json.dumps(index))
    subprocess.run(["tar", "-C", str(work), "-cf", str(dest), "."], check=True)
    subprocess.run(["rm", "-rf", str(work)], check=True)
    return dest
