"""The user's source code as a content-addressed mount.

For an app defined in `path/app.py`, the mount holds that file and every local module or
package it imported from the same source root (not the standard library or site-packages).
Each file is stored once by SHA-256; the mount's digest is the hash of its file list, so
unchanged code uploads nothing.
"""

from __future__ import annotations

import hashlib
import site
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

SKIP_DIRS = {"__pycache__", ".git", ".venv", "venv", "node_modules", ".mypy_cache", ".pytest_cache"}
MAX_FILES = 5_000


@dataclass(frozen=True)
class Mount:
    files: dict[str, str]          # relative path -> sha256
    contents: dict[str, bytes]     # sha256 -> bytes

    @property
    def digest(self) -> str:
        listing = "\n".join(f"{path} {digest}" for path, digest in sorted(self.files.items()))
        return hashlib.sha256(listing.encode()).hexdigest()

    def wire(self) -> dict:
        return {"digest": self.digest, "files": dict(self.files)}


def source_root(module: ModuleType) -> tuple[Path, str] | None:
    """(root directory, module name as importable from it) for a module loaded from a file."""
    file = getattr(module, "__file__", None)
    if not file:
        return None
    path = Path(file).resolve()
    parts = [path.stem] if path.name != "__init__.py" else []
    directory = path.parent
    while (directory / "__init__.py").exists():
        parts.insert(0, directory.name)
        directory = directory.parent
    return directory, ".".join(parts)


def _excluded_prefixes() -> list[Path]:
    paths = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    paths.add(sys.prefix)
    paths.add(sys.base_prefix)
    return [Path(p).resolve() for p in paths if p]


def _is_under(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def collect(root: Path, entry_files: list[Path]) -> Mount:
    """The entry files plus every module under `root` that is imported right now."""
    excluded = [p for p in _excluded_prefixes() if not _is_under(root, p) or p == root]
    excluded.append(Path(__file__).resolve().parent)  # Ferry itself is installed in containers
    wanted: set[Path] = {f.resolve() for f in entry_files}
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not file:
            continue
        path = Path(file).resolve()
        if not _is_under(path, root) or any(_is_under(path, p) and p != root for p in excluded):
            continue
        if any(part in SKIP_DIRS for part in path.relative_to(root).parts):
            continue
        wanted.add(path)
        # a package travels whole, so lazily imported submodules exist in the container
        top = path.relative_to(root).parts[0]
        package = root / top
        if package.is_dir() and (package / "__init__.py").exists():
            wanted.update(p.resolve() for p in package.rglob("*.py")
                          if not any(part in SKIP_DIRS for part in p.relative_to(root).parts))
    if len(wanted) > MAX_FILES:
        from .exception import InvalidError

        raise InvalidError(f"Refusing to upload {len(wanted)} source files from {root}; "
                           f"is a virtual environment inside the project? (limit {MAX_FILES})")
    files: dict[str, str] = {}
    contents: dict[str, bytes] = {}
    for path in sorted(wanted):
        if not path.suffix == ".py" and path not in {f.resolve() for f in entry_files}:
            continue
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        files[str(path.relative_to(root))] = digest
        contents[digest] = data
    return Mount(files=files, contents=contents)
