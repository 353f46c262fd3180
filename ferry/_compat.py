"""`import modal` for code written for the guide: an alias of `ferry` and its submodules
(`modal.functions`, `modal.exception`, ...).

Three ways in:
- `ferry run` / `serve` / `deploy` and containers call `install_modal_alias(force=True)`: the
  program runs on Ferry even where the real `modal` package is installed (the CLI says so).
- `python script.py`: the one line of `ferry-modal-alias.pth`, installed at the top of
  site-packages with Ferry (setup.py), appends a finder for the name `modal` to the end of
  `sys.meta_path` at interpreter start (nothing is imported), so a real `modal` installation is
  always found first; only an `import modal` that nothing else can satisfy loads Ferry
  (`modal_spec()`).
- `install_modal_alias()` without force changes nothing when a real `modal` is importable.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import Any, Sequence

ALIASED_SUBMODULES = ("exception", "gpu")  # imported at once; the others on first import


class _AliasLoader(importlib.abc.Loader):
    """Loads `modal.X` as the already imported `ferry.X` (the same module object)."""

    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self.spec = module.__spec__

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return self.module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self.spec  # the import system set the alias's spec: keep Ferry's own


class _SubmoduleAlias(importlib.abc.MetaPathFinder):
    """First on `sys.meta_path` once `modal` is Ferry: `modal.X` is `ferry.X`, never a second
    copy of Ferry's file loaded under another name."""

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("modal.") or sys.modules.get("modal") is not sys.modules.get("ferry"):
            return None
        try:
            module = importlib.import_module("ferry." + fullname[len("modal."):])
        except ModuleNotFoundError as error:
            if error.name and not error.name.startswith("ferry." + fullname[len("modal."):]):
                raise  # a dependency of that Ferry module is missing: say so
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(module))


class _FerryAsModal(_AliasLoader):
    """Imports Ferry only when `modal` is really imported (not when it is merely looked up)."""

    def __init__(self) -> None:
        pass

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        import ferry

        self.module, self.spec = ferry, ferry.__spec__
        _alias(ferry)
        return ferry


def modal_spec() -> importlib.machinery.ModuleSpec:
    """The spec the .pth file's finder answers for `import modal`: loading it loads Ferry."""
    return importlib.util.spec_from_loader("modal", _FerryAsModal())


def _is_ours(finder: Any) -> bool:
    return isinstance(finder, _SubmoduleAlias) or getattr(finder, "_ferry_modal_fallback", False)


def real_modal_installed() -> bool:
    """Whether a `modal` other than Ferry's alias is importable."""
    current = sys.modules.get("modal")
    if current is not None:
        return current is not sys.modules.get("ferry")
    for finder in sys.meta_path:
        if _is_ours(finder) or not hasattr(finder, "find_spec"):
            continue
        try:
            if finder.find_spec("modal", None) is not None:
                return True
        except (ImportError, ValueError):
            continue
    return False


def _alias(ferry: ModuleType) -> None:
    sys.modules["modal"] = ferry
    if not any(isinstance(f, _SubmoduleAlias) for f in sys.meta_path):
        sys.meta_path.insert(0, _SubmoduleAlias())
    for name in ALIASED_SUBMODULES:
        sys.modules[f"modal.{name}"] = importlib.import_module(f"ferry.{name}")


def install_modal_alias(*, force: bool = False) -> bool:
    """Make `import modal` (and `modal.functions`, `modal.exception`, ...) resolve to Ferry.
    Without `force`, returns False, changing nothing, when a real `modal` package is
    importable; with it, Ferry replaces it for this process (a `modal` already imported is
    replaced too)."""
    import ferry

    if sys.modules.get("modal") is ferry:
        return True
    if not force and real_modal_installed():
        return False
    for name in [n for n in sys.modules if n == "modal" or n.startswith("modal.")]:
        del sys.modules[name]
    _alias(ferry)
    return True
