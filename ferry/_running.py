"""What code can ask about where it runs: `is_local()`, and inside a container the ids of the
input being served and of its call (`current_input_id()`, `current_function_call_id()`).

The container's runner sets the ids around each input (`serving`); each thread and each task
of async user code sees those of its own input.
"""

from __future__ import annotations

import contextvars
import os
from contextlib import contextmanager
from typing import Iterator

_CONTAINER: list = []  # the container's runner, registered by it (ferry/_container/runner.py)
_CURRENT: contextvars.ContextVar[tuple[str | None, str | None] | None] = contextvars.ContextVar(
    "ferry_current_input", default=None)


def is_local() -> bool:
    """True in the process that defines and calls functions (your machine); False inside a
    Ferry container."""
    return not os.environ.get("FERRY_CONTAINER_ID")


def current_input_id() -> str | None:
    """The id of the input this code serves (`in-...`), or None outside a running input."""
    current = _CURRENT.get()
    return current[0] if current else None


def current_function_call_id() -> str | None:
    """The id of the call (`.remote()`, `.map()`, `.spawn()`) whose input this code serves,
    or None outside a running input. For a spawned call it is `FunctionCall.object_id`."""
    current = _CURRENT.get()
    return current[1] if current else None


def input_ids(item: dict) -> tuple[str | None, str | None]:
    """The public ids of an input item the server dispatched (`{id, call, ...}`)."""
    return f"in-{item['id']}", item.get("call")


def current() -> tuple[str | None, str | None] | None:
    return _CURRENT.get()


def set_current(ids: tuple[str | None, str | None] | None) -> contextvars.Token:
    return _CURRENT.set(ids)


@contextmanager
def serving(ids: tuple[str | None, str | None] | None) -> Iterator[None]:
    token = _CURRENT.set(ids)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def register_container(runner: object) -> None:
    _CONTAINER[:] = [runner]


def container() -> object:
    """The runner of this container; a clear error outside one."""
    if not _CONTAINER:
        raise RuntimeError("This can only be called inside a Ferry container (a running function).")
    return _CONTAINER[0]
