"""Decorators that mark functions before `@app.function` / `@app.cls` sees them:
`@method`, `@enter`, `@exit`, `@batched`, `@concurrent`, and the web endpoint decorators."""

from __future__ import annotations

import inspect
from typing import Any, Callable, TypeVar

from .exception import InvalidError

F = TypeVar("F", bound=Callable[..., Any])

METHOD = "method"
ENTER = "enter"
EXIT = "exit"
BATCHED = "batched"
CONCURRENT = "concurrent"
WEB = "web"


class PartialFunction:
    """A user function marked by a Ferry decorator. Inside a class it behaves like the plain
    function (so `self.predict(x)` works in the container); `@app.cls` reads its marks."""

    def __init__(self, raw_f: Callable[..., Any], flags: set[str], params: dict[str, Any]) -> None:
        self.raw_f = raw_f
        self.flags = flags
        self.params = params
        self.__doc__ = raw_f.__doc__
        self.__name__ = getattr(raw_f, "__name__", "function")
        self.__qualname__ = getattr(raw_f, "__qualname__", self.__name__)
        self.__module__ = getattr(raw_f, "__module__", "")
        self.__wrapped__ = raw_f

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return self.raw_f.__get__(obj, objtype)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.raw_f(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<{'/'.join(sorted(self.flags))} {self.__qualname__}>"


def _mark(target: Any, flag: str, params: dict[str, Any] | None = None, *, decorator: str) -> PartialFunction:
    if isinstance(target, PartialFunction):
        target.flags.add(flag)
        target.params.update(params or {})
        return target
    if not callable(target):
        raise InvalidError(f"@{decorator} must decorate a function. Did you forget parentheses, "
                           f"as in @{decorator}()?")
    return PartialFunction(target, {flag}, dict(params or {}))


def _no_bare_use(value: Any, name: str) -> None:
    if callable(value) and not isinstance(value, (int, float, bool)):
        raise InvalidError(f"Use @ferry.{name}() with parentheses, not @ferry.{name}.")


def method(_warn_parentheses: Any = None, *, is_generator: bool | None = None) -> Callable[[F], Any]:
    """Mark a method of an `@app.cls` class as callable remotely (`obj.method.remote()`)."""
    _no_bare_use(_warn_parentheses, "method")

    def wrapper(f: Any) -> PartialFunction:
        return _mark(f, METHOD, {"is_generator": is_generator}, decorator="method")

    return wrapper


def enter(_warn_parentheses: Any = None, *, snap: bool = False) -> Callable[[F], Any]:
    """Run this method once when a container of the class starts (load models here). With
    `snap=True` and `enable_memory_snapshot=True` on the class, it runs once into a memory
    snapshot that later containers start from (docs/snapshots.md); `snap=True` hooks run
    before the others."""
    _no_bare_use(_warn_parentheses, "enter")
    if not isinstance(snap, bool):
        raise InvalidError(f"@enter(snap=...) takes True or False, got {snap!r}.")

    def wrapper(f: Any) -> PartialFunction:
        return _mark(f, ENTER, {"snap": snap}, decorator="enter")

    return wrapper


def exit(_warn_parentheses: Any = None) -> Callable[[F], Any]:  # noqa: A001 - public API name
    """Run this method when a container of the class shuts down."""
    _no_bare_use(_warn_parentheses, "exit")

    def wrapper(f: Any) -> PartialFunction:
        return _mark(f, EXIT, decorator="exit")

    return wrapper


def batched(_warn_parentheses: Any = None, *, max_batch_size: int = 0, wait_ms: int = 0) -> Callable[[F], Any]:
    """Dynamic batching: callers pass single inputs, the function receives lists of them."""
    if _warn_parentheses is not None:
        raise InvalidError("Use @ferry.batched(max_batch_size=..., wait_ms=...) with its arguments. "
                           "Did you forget the parentheses?")
    if not isinstance(max_batch_size, int) or not 1 <= max_batch_size <= 1000:
        raise InvalidError(f"max_batch_size must be an int between 1 and 1000, got {max_batch_size!r}.")
    if not isinstance(wait_ms, int) or not 0 <= wait_ms <= 10 * 60 * 1000:
        raise InvalidError(f"wait_ms must be an int between 0 and 600000 (10 minutes), got {wait_ms!r}.")

    def wrapper(f: Any) -> PartialFunction:
        return _mark(f, BATCHED, {"max_batch_size": max_batch_size, "wait_ms": wait_ms}, decorator="batched")

    return wrapper


def concurrent(_warn_parentheses: Any = None, *, max_inputs: int = 0,
               target_inputs: int | None = None) -> Callable[[Any], Any]:
    """Let one container serve up to `max_inputs` inputs at once (threads for sync code,
    tasks on one event loop for async code). Works on functions and on classes."""
    if _warn_parentheses is not None:
        raise InvalidError("Use @ferry.concurrent(max_inputs=...) with its arguments. "
                           "Did you forget the parentheses?")
    if not isinstance(max_inputs, int) or max_inputs < 1:
        raise InvalidError(f"max_inputs must be a positive int, got {max_inputs!r}.")
    if target_inputs is not None and (not isinstance(target_inputs, int) or not 1 <= target_inputs <= max_inputs):
        raise InvalidError(f"target_inputs must be an int between 1 and max_inputs ({max_inputs}), "
                           f"got {target_inputs!r}.")
    params = {"max_inputs": max_inputs, "target_inputs": target_inputs}

    def wrapper(target: Any) -> Any:
        if inspect.isclass(target):
            target._ferry_concurrency = params
            return target
        return _mark(target, CONCURRENT, params, decorator="concurrent")

    return wrapper


def check_batching(owner: str, max_inputs: int | None, methods: dict[str, "PartialFunction"] | None = None) -> None:
    """Reject what @batched cannot do: concurrent inputs (a container runs one batch at a time,
    `max_batch_size` inputs at once), and, in a class, methods beside the batched one."""
    if max_inputs is not None and max_inputs > 1:
        raise InvalidError(f"{owner}: @ferry.batched cannot be combined with @ferry.concurrent (or "
                           "allow_concurrent_inputs): a batched container already runs up to "
                           "max_batch_size inputs at once. Remove one of the two.")
    if methods is not None:
        batched_names = [name for name, p in methods.items() if BATCHED in p.flags]
        if batched_names and len(methods) > 1:
            others = ", ".join(sorted(set(methods) - set(batched_names[:1])))
            raise InvalidError(f"{owner}: a class with a @ferry.batched method ({batched_names[0]}) "
                               f"cannot have other methods ({others}): every input of its containers "
                               "goes into a batch. Put the other methods on another class.")


def enter_methods(cls: type, *, snap: bool) -> list[str]:
    """The `@enter` methods of `cls` with `snap=True` (or not), in definition order."""
    return [name for name in lifecycle_methods(cls, ENTER)
            if bool(getattr(cls, name).params.get("snap")) is snap]


def lifecycle_methods(cls: type, flag: str) -> list[str]:
    """Names of the methods of `cls` (and its bases) marked with `flag`, in definition order."""
    names: list[str] = []
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, PartialFunction) and flag in value.flags and name not in names:
                names.append(name)
    return names

