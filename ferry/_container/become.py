"""Becoming a container in a process that imported Ferry ahead of time: a zygote's forked
child (server/runtimes/zygote_process.py) or a spare sandbox that was claimed
(ferry/_container/spare.py). `preload` is what such a process imports while it waits;
`run_as` gives it the container's environment and runs its entrypoint, as
`python -m MODULE` would have."""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import NoReturn


def preload() -> None:
    """Import what every container imports, so that the container starts with it."""
    import ferry  # noqa: F401
    import ferry._compat  # noqa: F401
    import ferry._container.processes  # noqa: F401
    import ferry._container.runner  # noqa: F401
    import ferry._container.sandbox  # noqa: F401
    import ferry._container.uplink  # noqa: F401
    import ferry._container.user_code  # noqa: F401


def run_as(env: dict[str, str], cwd: str | None, module: str | None) -> NoReturn:
    """Take `env` (exactly) and `cwd`, run `module`'s `main()` (a function's entrypoint
    `ferry._container`, or a sandbox's supervisor), and exit with its status."""
    code = 1
    try:
        os.environ.clear()
        os.environ.update(env)
        time.tzset()
        tempfile.tempdir = None  # chosen again from this environment's TMPDIR on first use
        if cwd:
            os.chdir(cwd)
        sys.path[0] = os.getcwd()  # what `python -m` puts first
        module = module or "ferry._container"
        entry = importlib.import_module("ferry._container.runner" if module == "ferry._container" else module)
        sys.modules["__main__"] = types.ModuleType("__main__")
        sys.argv = [str(Path(entry.__file__).with_name("__main__.py")) if module == "ferry._container"
                    else str(entry.__file__)]
        entry.main()
        code = 0
    except SystemExit as stop:
        if isinstance(stop.code, int) or stop.code is None:
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - reported on the container's stderr
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001, S110 - a closed pipe: nothing left to tell
                pass
    os._exit(code)
