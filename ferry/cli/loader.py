"""Importing the user's file for the CLI, and finding what `file.py::name` refers to."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .._app import App, LocalEntrypoint
from .._compat import install_modal_alias, real_modal_installed
from .._cls import Cls
from .._function import Function
from .._mount import source_root
from ..exception import InvalidError


@dataclass
class Target:
    """What `ferry run` should run: a local entrypoint, a function, or a class method."""

    app: App
    entrypoint: LocalEntrypoint | None = None
    function: Function | None = None
    cls: Cls | None = None
    method: str | None = None

    @property
    def label(self) -> str:
        if self.entrypoint is not None:
            return self.entrypoint.__name__
        if self.function is not None:
            return self.function._tag
        return f"{self.cls._tag}.{self.method}" if self.cls else "?"


def split_ref(ref: str) -> tuple[str, str | None]:
    path, sep, name = ref.partition("::")
    return path, (name or None) if sep else None


_NOTED: list[bool] = []  # the note about a real `modal` package was printed


def import_file(path_text: str) -> ModuleType:
    """Import a script (or `-m`-style module name) the way `ferry run` does, with `import
    modal` resolving to Ferry (even where the real `modal` package is installed: the program
    runs on Ferry, and the CLI says so once)."""
    if real_modal_installed() and not _NOTED:
        _NOTED.append(True)
        print("Note: the `modal` package is installed, but this program runs on Ferry: `import modal` "
              "gives Ferry here.", file=sys.stderr, flush=True)
    install_modal_alias(force=True)
    path = Path(path_text)
    if path.suffix == ".py" or path.exists():
        if not path.exists():
            raise InvalidError(f"No such file: {path_text}")
        resolved = path.resolve()
        spec_module = type("M", (), {"__file__": str(resolved)})
        root, module_name = source_root(spec_module)  # type: ignore[misc, arg-type]
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        spec = importlib.util.spec_from_file_location(module_name, resolved)
        if spec is None or spec.loader is None:
            raise InvalidError(f"Cannot import {path_text}.")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        return module
    if "." in path_text or path_text.isidentifier():
        sys.path.insert(0, str(Path.cwd()))
        return importlib.import_module(path_text)
    raise InvalidError(f"No such file or module: {path_text}")


def find_app(module: ModuleType, name: str | None = None) -> App:
    if name is not None:
        value = getattr(module, name, None)
        if isinstance(value, App):
            return value
    apps = [v for v in vars(module).values() if isinstance(v, App)]
    unique = list({id(a): a for a in apps}.values())
    if not unique:
        raise InvalidError(f"{module.__name__} defines no ferry.App. Create one with app = modal.App(\"name\").")
    if len(unique) > 1:
        default = getattr(module, "app", None)
        if isinstance(default, App):
            return default
        raise InvalidError(f"{module.__name__} defines several apps; name one with FILE::APP_VARIABLE.")
    return unique[0]


def find_target(module: ModuleType, name: str | None) -> Target:
    app = find_app(module, name.split(".")[0] if name else None)
    if name is not None and isinstance(getattr(module, name.split(".")[0], None), App):
        name = name.split(".", 1)[1] if "." in name else None
    entrypoints = app.registered_entrypoints
    functions = app.registered_functions
    classes = app.registered_classes
    if name is None:
        if len(entrypoints) == 1:
            return Target(app, entrypoint=next(iter(entrypoints.values())))
        if not entrypoints and len(functions) == 1 and not classes:
            return Target(app, function=next(iter(functions.values())))
        choices = [*entrypoints, *functions, *(f"{c}.{m}" for c, k in classes.items() for m in k._methods)]
        raise InvalidError("Say what to run: FILE::NAME, one of: " + ", ".join(choices) + ".")
    if name in entrypoints:
        return Target(app, entrypoint=entrypoints[name])
    if name in functions:
        return Target(app, function=functions[name])
    cls_name, _, method = name.partition(".")
    if cls_name in classes and method:
        if method not in classes[cls_name]._methods:
            raise InvalidError(f"{cls_name} has no @method {method!r}.")
        return Target(app, cls=classes[cls_name], method=method)
    choices = [*entrypoints, *functions, *(f"{c}.{m}" for c, k in classes.items() for m in k._methods)]
    raise InvalidError(f"{name!r} is not a local entrypoint, function or Class.method of the app. "
                       f"Choices: {', '.join(choices) or 'none'}.")


def call_target(target: Target, args: tuple, kwargs: dict[str, Any]) -> Any:
    if target.entrypoint is not None:
        return target.entrypoint(*args, **kwargs)
    if target.function is not None:
        if target.function._is_generator:
            return list(target.function.remote_gen(*args, **kwargs))
        return target.function.remote(*args, **kwargs)
    assert target.cls is not None and target.method is not None
    return getattr(target.cls(), target.method).remote(*args, **kwargs)


def target_callable(target: Target) -> Any:
    """The Python function whose signature the CLI options follow."""
    if target.entrypoint is not None:
        return target.entrypoint.raw_f
    if target.function is not None:
        return target.function._ferry_raw
    assert target.cls is not None and target.method is not None
    return target.cls._methods[target.method].raw_f
