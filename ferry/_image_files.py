"""Local files of an image: what `add_local_*` and `pip_install_from_*` read on this machine.

Files travel to the server as content-addressed blobs; a step or mount refers to them by a
manifest `{relative path: [sha256, mode]}`, so an image's cache key depends on the files'
content (and executable bits), never on where they live locally or on their timestamps.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Sequence, Union

from .exception import InvalidError

MAX_FILES = 50_000
MAX_FILE_BYTES = 200 * 1024 * 1024  # one blob travels in one frame (the protocol caps frames)

Ignore = Union[Sequence[str], Callable[[Path], bool], None]


@dataclass
class Manifest:
    """Files by relative POSIX path -> [sha256, mode], and the bytes of each blob."""

    files: dict[str, list[Any]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)

    def add(self, relpath: str, path: Path) -> None:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InvalidError(
                f"{path} is {size / 2**20:.0f} MiB; Ferry uploads image files up to "
                f"{MAX_FILE_BYTES // 2**20} MiB each. Download large files inside the image "
                "instead (run_commands or run_function), or store them in a volume."
            )
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        mode = 0o755 if os.stat(path).st_mode & stat.S_IXUSR else 0o644
        self.files[relpath] = [digest, mode]
        self.blobs[digest] = data

    @property
    def digest(self) -> str:
        listing = "\n".join(f"{p} {d} {m:o}" for p, (d, m) in sorted(self.files.items()))
        return hashlib.sha256(listing.encode()).hexdigest()


def _ignored(relpath: PurePosixPath, path: Path, ignore: Ignore) -> bool:
    if ignore is None:
        return False
    if callable(ignore):
        return bool(ignore(path))
    text = str(relpath)
    for pattern in ignore:
        pattern = pattern.rstrip("/")
        if fnmatch.fnmatch(text, pattern) or fnmatch.fnmatch(relpath.name, pattern):
            return True
        if any(fnmatch.fnmatch(part, pattern) for part in relpath.parts[:-1]):
            return True
    return False


def check_ignore(ignore: Any) -> Ignore:
    if ignore is None or callable(ignore):
        return ignore
    if isinstance(ignore, str) or not all(isinstance(p, str) for p in ignore):
        raise InvalidError("ignore= takes a list of glob patterns (e.g. ['*.pyc', '.git']) or a "
                           "function of a Path returning True for files to leave out.")
    return list(ignore)


def collect_dir(local: Path, ignore: Ignore = None, *, prefix: str = "") -> Manifest:
    """Every file under `local` (symlinks followed) not matched by `ignore`."""
    if not local.is_dir():
        raise InvalidError(f"add_local_dir: {local} is not a directory (relative paths are "
                           f"relative to the current directory, {Path.cwd()}).")
    manifest = Manifest()
    for directory, dirnames, filenames in os.walk(local, followlinks=True):
        base = Path(directory)
        kept = []
        for name in sorted(dirnames):
            rel = PurePosixPath(base.relative_to(local).as_posix(), name)
            if not _ignored(rel, base / name, ignore):
                kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            path = base / name
            rel = PurePosixPath(base.relative_to(local).as_posix(), name)
            if _ignored(rel, path, ignore) or not path.is_file():
                continue
            if len(manifest.files) >= MAX_FILES:
                raise InvalidError(f"{local} holds more than {MAX_FILES} files; pass ignore= to "
                                   "leave some out, or download them inside the image.")
            manifest.add(str(PurePosixPath(prefix, rel)) if prefix else str(rel), path)
    return manifest


def collect_file(local: Path, name: str) -> Manifest:
    if not local.is_file():
        raise InvalidError(f"add_local_file: {local} is not a file (relative paths are relative "
                           f"to the current directory, {Path.cwd()}).")
    manifest = Manifest()
    manifest.add(name, local)
    return manifest


def collect_python_source(modules: Sequence[str], ignore: Ignore = None) -> Manifest:
    """The source of each top-level module or package, as `pkg/...` or `mod.py` entries."""
    manifest = Manifest()
    default_ignore = ["__pycache__", "*.pyc"] if ignore is None else ignore
    for name in modules:
        if not isinstance(name, str) or not name.isidentifier():
            raise InvalidError(f"add_local_python_source() takes top-level module names such as "
                               f"'mypackage', got {name!r}.")
        spec = importlib.util.find_spec(name)
        if spec is None:
            raise InvalidError(f"add_local_python_source: no module named {name!r} can be imported "
                               f"here (sys.path: {sys.path[:4]}...). Run from the directory holding it.")
        if spec.submodule_search_locations:
            locations = [Path(p) for p in spec.submodule_search_locations]
            for location in locations:
                part = collect_dir(location, default_ignore, prefix=name)
                manifest.files.update(part.files)
                manifest.blobs.update(part.blobs)
        elif spec.origin and spec.origin.endswith(".py"):
            manifest.add(f"{name}.py", Path(spec.origin))
        else:
            raise InvalidError(f"add_local_python_source: {name!r} is not a Python source module "
                               f"(it is {spec.origin!r}); install it in the image with pip_install.")
    return manifest


def read_file_blob(path: Path, what: str) -> tuple[str, bytes]:
    if not path.is_file():
        raise InvalidError(f"{what}: {path} is not a file (relative paths are relative to the "
                           f"current directory, {Path.cwd()}).")
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest(), data


def pyproject_dependencies(path: Path, optional_dependencies: Sequence[str]) -> list[str]:
    """`project.dependencies` plus the named optional groups of a pyproject.toml."""
    import tomllib

    if not path.is_file():
        raise InvalidError(f"pip_install_from_pyproject: {path} is not a file.")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InvalidError(f"pip_install_from_pyproject: {path} is not valid TOML: {exc}") from None
    project = data.get("project")
    if not isinstance(project, dict):
        raise InvalidError(f"pip_install_from_pyproject: {path} has no [project] table "
                           "(PEP 621); list the dependencies under [project].")
    packages = list(project.get("dependencies") or [])
    groups = project.get("optional-dependencies") or {}
    for group in optional_dependencies:
        if group not in groups:
            raise InvalidError(f"pip_install_from_pyproject: {path} has no optional dependency "
                               f"group {group!r}; it has: {', '.join(sorted(groups)) or 'none'}.")
        packages.extend(groups[group])
    return packages
