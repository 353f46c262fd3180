"""Writing files of an image manifest (`{relative path: [sha256, mode]}`) from the blob store:
for `copy` steps, and for `add_local_*` mounts materialised on the host for containers."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from ...exception import InvalidError
from ..blobs import BlobStore


def materialise_files(files: dict[str, list[Any]], blobs: BlobStore, dest: Path) -> Path:
    """Write every file of the manifest under `dest` (created), with its mode. A bare digest
    (the source mount's manifest) means mode 0644."""
    dest.mkdir(parents=True, exist_ok=True)
    for relpath, entry in files.items():
        digest, mode = (entry, 0o644) if isinstance(entry, str) else entry
        relative = PurePosixPath(relpath)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise InvalidError(f"Invalid file path {relpath!r} in an image manifest.")
        target = dest.joinpath(*relative.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blobs.get(digest))
        os.chmod(target, int(mode) & 0o777)
    return dest


def materialise_mount(mount: dict[str, Any], blobs: BlobStore, root: Path) -> Path:
    """`root/<digest>` holding the mount's files, written once (atomically) and then reused;
    each use marks it fresh (its modification time: server/blob_gc.py keeps what containers
    started since then use)."""
    target = root / mount["digest"]
    if target.is_dir():
        try:
            os.utime(target)
        except FileNotFoundError:  # collected meanwhile: written again below
            pass
        else:
            return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        materialise_files(mount["files"], blobs, staging)
        os.chmod(staging, 0o755)
        os.rename(staging, target)
    except OSError:
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
