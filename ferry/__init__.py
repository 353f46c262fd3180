"""Ferry: self-hosted serverless compute for Python.

    import ferry

    app = ferry.App("my-app")

    @app.function()
    def hello(name: str) -> str:
        return f"Hello {name}!"

Run it with `ferry run script.py`. Code written for the reference guide runs unchanged with
`import ferry as modal`, or with `import modal` through the `ferry` CLI.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import exception, gpu
from ._app import App, LocalEntrypoint
from ._cls import Cls, parameter
from ._dict import Dict
from ._function import Function, FunctionCall
from ._image import Image
from ._partial import batched, concurrent, enter, exit, method
from ._queue import Queue
from ._resources import Retries
from ._sandbox import Sandbox
from ._running import current_function_call_id, current_input_id, is_local
from ._schedule import Cron, Period
from ._secret import Secret
from ._volume import Volume
from ._web import asgi_app, fastapi_endpoint, web_endpoint, web_server, wsgi_app
from .exception import Error


def enable_output() -> "_OutputContext":
    """Show container logs and progress in this terminal (they are shown by default)."""
    return _OutputContext()


class _OutputContext:
    def __enter__(self) -> "_OutputContext":
        return self

    def __exit__(self, *exc: object) -> None:
        return None


__all__ = [
    "App",
    "Cls",
    "Cron",
    "Dict",
    "Error",
    "Function",
    "FunctionCall",
    "Image",
    "LocalEntrypoint",
    "Period",
    "Queue",
    "Retries",
    "Sandbox",
    "Secret",
    "Volume",
    "__version__",
    "asgi_app",
    "batched",
    "concurrent",
    "current_function_call_id",
    "current_input_id",
    "enable_output",
    "enter",
    "exception",
    "exit",
    "fastapi_endpoint",
    "gpu",
    "is_local",
    "method",
    "parameter",
    "web_endpoint",
    "web_server",
    "wsgi_app",
]
