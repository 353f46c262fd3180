"""Finding the user's code inside a container: materialise the uploaded source files, import
the module by name, and locate the function or class the container serves."""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from .. import _config
from .._serialization import deserialize


def materialise_mount(mount: dict[str, Any], fetch: Callable[[str], bytes]) -> Path:
    """Write the mount's files (fetched by hash) into a cache directory named by its digest.

    The directory is built beside its final place and renamed into it, so a half-written
    mount is never used; containers of the same code share it."""
    root = _config.home() / "mounts" / mount["digest"]
    if root.exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root.parent, prefix=".staging-"))
    for relpath, digest in mount["files"].items():
        target = staging / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(fetch(digest))
    try:
        os.rename(staging, root)
    except OSError:  # another container won the race
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return root


def load_target(definition: dict[str, Any], code_root: Path | None) -> Any:
    """Return what the container serves: the user's raw function or class object."""
    if definition.get("pickled"):
        return deserialize(definition["pickled"], what="function definition")
    if code_root is not None and str(code_root) not in sys.path:
        sys.path.insert(0, str(code_root))
    module = importlib.import_module(definition["module"])
    obj: Any = module
    for part in definition["qualname"].split("."):
        obj = getattr(obj, part)
    raw = getattr(obj, "_ferry_raw", None)
    return raw if raw is not None else obj


def apps_in(module_name: str) -> list[Any]:
    """Every ferry.App defined at the top level of the imported user module."""
    from .._app import App

    module = sys.modules.get(module_name)
    if module is None:
        return []
    return [value for value in vars(module).values() if isinstance(value, App)]
