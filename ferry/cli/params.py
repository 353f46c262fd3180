"""A function's signature as command-line options: `def main(who: str, n: int = 1)` becomes
`--who TEXT [--n INTEGER]`."""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any, Callable

import click

from ..exception import InvalidError

_TYPES: dict[Any, click.ParamType] = {int: click.INT, float: click.FLOAT, str: click.STRING}


_NAMES = {"int": int, "float": float, "str": str, "bool": bool, "Any": Any, "typing.Any": Any}


def _from_string(annotation: str) -> Any:
    """An annotation left as a string (get_type_hints failed): `int`, `int | None`,
    `Optional[int]`, `typing.Optional[int]`."""
    text = annotation.replace(" ", "").strip("'\"")
    for prefix in ("typing.Optional[", "Optional["):
        if text.startswith(prefix) and text.endswith("]"):
            return typing.Optional[_from_string(text[len(prefix):-1])]
    parts = [p for p in text.split("|") if p != "None"]
    if len(parts) == 1 and len(text.split("|")) > 1:
        return typing.Optional[_from_string(parts[0])]
    return _NAMES.get(text, annotation)


def _click_type(annotation: Any, name: str) -> click.ParamType | None:
    if isinstance(annotation, str):
        annotation = _from_string(annotation)
    if annotation is inspect.Parameter.empty or annotation is Any:
        return click.STRING
    if annotation is bool:
        return None  # a flag
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:  # Optional[T], T | None
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(options) == 1:
            inner = _click_type(options[0], name)
            return click.BOOL if inner is None else inner  # Optional[bool]: --x true|false
    if annotation in _TYPES:
        return _TYPES[annotation]
    raise InvalidError(f"Parameter {name!r} has type {annotation!r}; command-line arguments can be "
                       "str, int, float or bool.")


def options_for(fn: Callable[..., Any]) -> list[click.Parameter]:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    params: list[click.Parameter] = []
    for name, param in inspect.signature(fn).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(name, param.annotation)
        flag = "--" + name.replace("_", "-")
        required = param.default is inspect.Parameter.empty
        default = None if required else param.default
        click_type = _click_type(annotation, name)
        if click_type is None:
            params.append(click.Option([f"{flag}/--no-{name.replace('_', '-')}", name],
                                       default=bool(default), show_default=True))
        else:
            extra = {} if required else {"default": default, "show_default": True}
            params.append(click.Option([flag, name], type=click_type, required=required, **extra))
    return params


def parse_args(fn: Callable[..., Any], argv: list[str], prog: str) -> dict[str, Any] | None:
    """Parse `argv` against `fn`'s options. Returns None when --help was shown."""
    result: dict[str, Any] = {}

    def capture(**kwargs: Any) -> None:
        result.update(kwargs)

    command = click.Command(prog, params=options_for(fn), callback=capture, help=inspect.getdoc(fn))
    try:
        command.main(argv, prog_name=prog, standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError:
        return None
    except click.ClickException as exc:
        raise InvalidError(exc.format_message()) from None
    if not result and any(a in ("--help", "-h") for a in argv):
        return None
    return result
