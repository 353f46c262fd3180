"""`ferry.partial_function`, as `modal.partial_function` has it: the decorators that mark
functions and methods, and the `PartialFunction` they return."""

from ._partial import PartialFunction, batched, concurrent, enter, exit, method
from ._web import asgi_app, fastapi_endpoint, web_endpoint, web_server, wsgi_app

__all__ = [
    "PartialFunction",
    "asgi_app",
    "batched",
    "concurrent",
    "enter",
    "exit",
    "fastapi_endpoint",
    "method",
    "web_endpoint",
    "web_server",
    "wsgi_app",
]
