"""The layer store under `$FERRY_HOME/images`: layers, their metadata and build logs, and
records of built images.

    layers/<key>/        the files a step added or changed (an overlayfs upper directory:
                         deletions are whiteouts); absent for steps that only set metadata
    layers/<key>.json    metadata, cumulative along the chain: parent, env, workdir, python,
                         size, build time; a base layer's `path` names its root filesystem
    layers/<key>.log     the step's build output (kept for `ferry image logs`)
    records/<key>.json   an image built (or failed) here: its layers top to base, label, dates
    staging/             builds in progress (renamed into layers/ when complete)
    venvs/<key>/         the process runtime's images: one virtual environment each
    venvs/<key>.logs/    the output of each of their steps when last built (`<index>.log`)

A layer is complete once its `.json` exists: the directory is renamed into place first, then
the metadata is written atomically, so an interrupted build never leaves a layer that looks
complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ...exception import InvalidError, NotFoundError


def _write_json(path: Path, value: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as handle:
        json.dump(value, handle, indent=1, sort_keys=True)
    os.replace(tmp, path)


def tree_size(path: Path) -> int:
    """Bytes of the regular files under `path` (symlinks and hard links counted once)."""
    total, seen = 0, set()
    for directory, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


class LayerStore:
    """Files of layers and image records; all methods are blocking (call from a thread)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.layers = root / "layers"
        self.records = root / "records"
        self.staging = root / "staging"
        self.venvs = root / "venvs"
        for directory in (self.layers, self.records, self.staging, self.venvs):
            directory.mkdir(parents=True, exist_ok=True)

    # -- layers ---------------------------------------------------------------------------
    def layer_dir(self, key: str) -> Path:
        return self.layers / key

    def meta(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.layers / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None

    def complete(self, key: str) -> dict[str, Any] | None:
        """The layer's metadata if it is built and its files are present."""
        meta = self.meta(key)
        if meta is None:
            return None
        path = meta.get("path")
        if path is not None and not Path(path).is_dir():
            return None
        if meta.get("has_dir") and not self.layer_dir(key).is_dir():
            return None
        return meta

    def new_staging(self, key: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{key[:16]}-", dir=self.staging))

    def commit(self, key: str, upper: Path | None, meta: dict[str, Any]) -> dict[str, Any]:
        """Move `upper` (if it holds anything) into place as layer `key` and write its metadata."""
        target = self.layer_dir(key)
        meta_path = self.layers / f"{key}.json"
        meta_path.unlink(missing_ok=True)
        if target.exists():  # a forced rebuild replaces the layer
            trash = Path(tempfile.mkdtemp(prefix="trash-", dir=self.staging))
            os.rename(target, trash / "old")
            shutil.rmtree(trash, ignore_errors=True)
        has_dir = upper is not None and upper.is_dir() and any(upper.iterdir())
        if has_dir:
            assert upper is not None
            os.rename(upper, target)
        meta = {**meta, "key": key, "has_dir": has_dir, "created": time.time(),
                "size": tree_size(target) if has_dir else int(meta.get("size") or 0)}
        _write_json(meta_path, meta)
        return meta

    def write_log(self, key: str, lines: list[str]) -> None:
        (self.layers / f"{key}.log").write_text("".join(line + "\n" for line in lines))

    def read_log(self, key: str) -> str | None:
        try:
            return (self.layers / f"{key}.log").read_text()
        except OSError:
            return None

    def venv_log(self, key: str, index: int) -> Path:
        """Where the output of step `index` of the process runtime's image `key` is kept."""
        return self.venvs / f"{key}.logs" / f"{index}.log"

    def chain(self, key: str) -> list[dict[str, Any]]:
        """Metadata of the layer and its ancestors, base first."""
        result = []
        current: str | None = key
        while current:
            meta = self.meta(current)
            if meta is None:
                break
            result.append(meta)
            current = meta.get("parent") or None
        return list(reversed(result))

    # -- image records --------------------------------------------------------------------
    def put_record(self, key: str, record: dict[str, Any]) -> None:
        old = self.record(key) or {}
        _write_json(self.records / f"{key}.json", {"created": old.get("created", time.time()),
                                                   **record, "key": key, "last_used": time.time()})

    def record(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.records / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None

    def all_records(self) -> list[dict[str, Any]]:
        records = []
        for path in self.records.glob("*.json"):
            try:
                records.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return sorted(records, key=lambda r: r.get("created", 0))

    def find(self, prefix: str) -> dict[str, Any]:
        """The image record whose key starts with `prefix`."""
        matches = [r for r in self.all_records() if r["key"].startswith(prefix)]
        if not matches:
            raise NotFoundError(f"No image {prefix!r} in the cache. See `ferry image list`.")
        if len(matches) > 1:
            raise InvalidError(f"{prefix!r} matches {len(matches)} images; give more of the key.")
        return matches[0]

    def remove(self, record: dict[str, Any], keep_layers: set[str]) -> int:
        """Delete an image record, and its layers (or venv) that no kept image uses.
        Returns the bytes freed."""
        freed = 0
        for key in record.get("layers") or []:
            if key in keep_layers:
                continue
            meta = self.meta(key) or {}
            if meta.get("path"):  # base root filesystems are shared: never removed here
                continue
            freed += int(meta.get("size") or 0)
            shutil.rmtree(self.layer_dir(key), ignore_errors=True)
            for suffix in (".json", ".log"):
                (self.layers / f"{key}{suffix}").unlink(missing_ok=True)
        venv = record.get("venv")
        if venv and Path(venv).is_dir() and Path(venv).parent == self.venvs:
            freed += tree_size(Path(venv))
            shutil.rmtree(venv, ignore_errors=True)
        shutil.rmtree(self.venvs / f"{record['key']}.logs", ignore_errors=True)
        (self.records / f"{record['key']}.json").unlink(missing_ok=True)
        return freed

    def clean_staging(self) -> None:
        """Remove builds that a stopped server left unfinished."""
        for entry in self.staging.iterdir():
            shutil.rmtree(entry, ignore_errors=True)
