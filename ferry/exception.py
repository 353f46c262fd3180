"""Ferry's errors: one hierarchy, independent of the transport.

    Error                          base of everything Ferry raises on purpose
    ├── InvalidError               bad arguments or configuration (fix your code)
    │   └── NotFoundError          a named object (app, function, secret...) does not exist
    ├── ExecutionError             the platform failed to run something
    │   ├── ContainerCrashError    a container died while running an input
    │   ├── OutOfMemoryError       a container exceeded its memory limit
    │   └── InputCancellation      the input was cancelled
    ├── FunctionTimeoutError       an input ran longer than its `timeout`
    ├── SandboxTimeoutError        a Sandbox ran longer than its `timeout`
    ├── SandboxTerminatedError     a Sandbox was ended by terminate() (or its app stopping)
    ├── TimeoutError               waiting for a result took longer than asked (`.get(timeout=)`)
    ├── SerializationError         an argument or result could not be (un)pickled
    ├── DeserializationError       a payload could not be unpickled where it arrived
    ├── ConnectionError            the control plane cannot be reached
    ├── AuthError                  the control plane refused this peer's credential
    ├── PermissionDeniedError      the credential does not allow this request
    ├── ServerError                the control plane reported an internal error
    └── RemoteError                a user exception whose type cannot be rebuilt locally

A user exception raised inside a remote function is re-raised locally as its own type; the
remote traceback is attached as a note (`__notes__`) and printed by the CLI.
"""

from __future__ import annotations

import builtins
import warnings


class Error(Exception):
    """Base class of every error Ferry raises on purpose."""


class InvalidError(Error):
    """An argument, decorator or configuration is invalid. The message says how to fix it."""


class NotFoundError(InvalidError):
    """A named object (app, function, class, secret, volume...) does not exist."""


class ExecutionError(Error):
    """The platform could not run an input to completion."""


class ContainerCrashError(ExecutionError):
    """A container exited (crash, signal, `os._exit`) while it was running an input."""


class OutOfMemoryError(ContainerCrashError):
    """A container was killed because it exceeded its memory limit."""


class InputCancellation(ExecutionError):
    """The input was cancelled before it finished (`FunctionCall.cancel()`)."""


class FunctionTimeoutError(Error, builtins.TimeoutError):
    """An input ran longer than the function's `timeout`."""


class SandboxTimeoutError(Error, builtins.TimeoutError):
    """A Sandbox ran past its `timeout` and was ended (its returncode is 124)."""


class SandboxTerminatedError(Error):
    """A Sandbox was terminated before its entrypoint ended (its returncode is 137)."""


class TimeoutError(Error, builtins.TimeoutError):  # noqa: A001 - mirrors the reference API
    """A client-side wait (for example `FunctionCall.get(timeout=...)`) ran out."""


class SerializationError(Error):
    """An argument or return value could not be serialized with cloudpickle."""


class DeserializationError(Error):
    """A payload could not be deserialized where it arrived (missing module, version skew)."""


class ConnectionError(Error, builtins.ConnectionError):  # noqa: A001
    """The Ferry control plane could not be reached or the connection was lost."""


class AuthError(Error):
    """The control plane refused the connection's credential (missing, unknown or revoked)."""


class PermissionDeniedError(Error):
    """The peer's credential does not allow this request (for example an administrative request
    made from inside a container)."""


class ServerError(Error):
    """The control plane failed while handling a request; see the server log."""


class RemoteError(Error):
    """A remote exception whose type could not be rebuilt locally; carries its text."""


class DeprecationError(Error):
    """A removed spelling was used; the message names the current one."""


def deprecation_warning(message: str, *, stacklevel: int = 3) -> None:
    """Warn about an old spelling, pointing at the user's line."""
    warnings.warn(message, DeprecationWarning, stacklevel=stacklevel)


__all__ = [
    "AuthError",
    "ConnectionError",
    "ContainerCrashError",
    "DeprecationError",
    "DeserializationError",
    "Error",
    "ExecutionError",
    "FunctionTimeoutError",
    "InputCancellation",
    "InvalidError",
    "NotFoundError",
    "OutOfMemoryError",
    "PermissionDeniedError",
    "RemoteError",
    "SandboxTerminatedError",
    "SandboxTimeoutError",
    "SerializationError",
    "ServerError",
    "TimeoutError",
]
