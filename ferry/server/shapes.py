"""The declared shape of each request's arguments, checked before its handler runs.

Each handler states the arguments it reads (`@rpc(name, shape={"name": REQUIRED_STR, ...})`,
or a service's `shapes()`); a request whose arguments are missing or of the wrong type is
answered with an `InvalidError` naming the argument, never with a server error. Arguments a
handler does not declare are ignored. Nested values (a function definition, a volume entry)
are checked where they are used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

from ..exception import InvalidError

_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", bytes: "bytes",
          dict: "a map", list: "a list"}


@dataclass(frozen=True)
class Arg:
    """One argument: the types it may have, and whether it must be present (and not null)."""

    types: tuple[type, ...]
    required: bool = True
    items: type | None = None  # for lists: the type of every element

    def describe(self) -> str:
        text = " or ".join(_NAMES.get(t, t.__name__) for t in self.types)
        if self.items is not None:
            text += f" of {_NAMES.get(self.items, self.items.__name__)}s"
        return text

    def accepts(self, value: Any) -> bool:
        if not _fits(value, self.types):
            return False
        return self.items is None or all(_fits(item, (self.items,)) for item in value)


def _fits(value: Any, types: tuple[type, ...]) -> bool:
    """isinstance, except that a boolean is not an integer here (msgpack keeps them apart)."""
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


def required(*types: type, items: type | None = None) -> Arg:
    return Arg(types, True, items)


def optional(*types: type, items: type | None = None) -> Arg:
    return Arg(types, False, items)


Shape = Mapping[str, Arg]
Handler = Callable[[Any, dict[str, Any]], Awaitable[Any]]

NUMBER = (int, float)


def check(method: str, shape: Shape, args: Any) -> None:
    """Raise InvalidError naming the first argument of `args` that does not fit `shape`."""
    if not isinstance(args, dict):
        raise InvalidError(f"{method}: the arguments must be a map, not {type(args).__name__}.")
    for name, arg in shape.items():
        value = args.get(name)
        if value is None:
            if arg.required:
                raise InvalidError(f"{method} needs the argument {name!r} ({arg.describe()}).")
            continue
        if not arg.accepts(value):
            raise InvalidError(f"{method}: the argument {name!r} must be {arg.describe()}, "
                               f"not {type(value).__name__}.")


def checked(method: str, shape: Shape | None, handler: Handler) -> Handler:
    """`handler`, checking its arguments against `shape` first (when one is declared)."""
    if not shape:
        async def plain(conn: Any, args: Any) -> Any:
            if not isinstance(args, dict):
                raise InvalidError(f"{method}: the arguments must be a map, not {type(args).__name__}.")
            return await handler(conn, args)

        return plain

    async def validated(conn: Any, args: Any) -> Any:
        check(method, shape, args)
        return await handler(conn, args)

    return validated
