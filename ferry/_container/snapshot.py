"""Memory snapshots (`enable_memory_snapshot=True`), on the container side.

A snapshot is a template process (a zygote, server/runtimes/zygote_process.py) that has
imported the function's code and, for a class, built its instance and run its
`@enter(snap=True)` hooks, once. Containers of the function are forked from it: they start
with that memory, run only the `snap=False` hooks, and are otherwise containers like any
other (their own process, session, environment with the secrets, credential, cgroup, working
directory; see docs/snapshots.md).

    template:  prepare(spec)      import, instance, snap hooks; GPUs hidden, no secrets, no
                                  credential, no control plane; on the sandbox runtime, its
                                  root frozen and a child's isolation tried (isolate.py)
    container: restored(defn)     what the template prepared, if this container was forked
                                  from the template of this very definition; else None
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Restored:
    """What a snapshot holds: the user's function or class, and the class's instance."""

    module: str
    qualname: str
    target: Any
    instance: Any


_RESTORED: Restored | None = None


def prepare(spec: dict[str, Any]) -> None:
    """In the template, before it forks anything: import the user's code and run the class's
    `snap=True` hooks. Raises what they raise (the server then starts containers the ordinary
    way and logs why)."""
    global _RESTORED
    from .._cls import bind_parameters
    from .._compat import install_modal_alias
    from .._partial import enter_methods
    from .._serialization import deserialize_args
    from .user_code import load_target

    definition = spec["definition"]
    install_modal_alias(force=True)
    os.environ.setdefault("FERRY_IS_CONTAINER", "1")
    code_dir = spec.get("code_dir")
    target = load_target(definition, Path(code_dir) if code_dir else None)
    instance = None
    if definition.get("kind") == "class":
        params = spec.get("params")
        kwargs = deserialize_args(base64.b64decode(params))[1] if params else {}
        instance = bind_parameters(target, kwargs)
        for name in enter_methods(type(instance), snap=True):
            result = getattr(instance, name)()
            if inspect.isawaitable(result):
                asyncio.run(_awaited(result))  # its loop is closed before any fork
    _RESTORED = Restored(definition["module"], definition["qualname"], target, instance)
    isolated = spec.get("isolate")
    if isolated:  # the sandbox runtime's template: its children get namespaces of their own
        from . import isolate

        isolate.check_alone()
        isolate.freeze_root(isolated["lower"])
        isolate.probe(isolated["lower"], isolated["probe_layer"], isolated["exclude"])


async def _awaited(result: Any) -> Any:
    return await result


def restored(definition: dict[str, Any]) -> Restored | None:
    """In a container: the snapshot it was forked from, if that is this definition's."""
    state = _RESTORED
    if state is None or (state.module, state.qualname) != (definition.get("module"), definition.get("qualname")):
        return None
    return state
