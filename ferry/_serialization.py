"""Turning arguments, results and exceptions into bytes and back (cloudpickle)."""

from __future__ import annotations

import pickle
import traceback
from typing import Any

import cloudpickle

from . import exception as exc_module
from .exception import DeserializationError, RemoteError, SerializationError


def serialize(obj: Any, *, what: str = "value") -> bytes:
    """Pickle `obj`; raise SerializationError naming `what` when it cannot be pickled."""
    try:
        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as error:  # cloudpickle raises many types
        raise SerializationError(
            f"Could not serialize the {what} ({type(obj).__name__}): {error}. "
            "Arguments and results must be picklable: pass plain data, or open resources "
            "(files, sockets, locks, clients) inside the function instead."
        ) from None


def deserialize(data: bytes, *, what: str = "value") -> Any:
    try:
        return pickle.loads(data)
    except Exception as error:
        raise DeserializationError(
            f"Could not deserialize the {what}: {type(error).__name__}: {error}. "
            "Is the module that defines its type installed on both sides?"
        ) from None


def serialize_args(args: tuple, kwargs: dict) -> bytes:
    return serialize((args, kwargs), what="function arguments")


def deserialize_args(data: bytes) -> tuple[tuple, dict]:
    return deserialize(data, what="function arguments")


def serialize_exception(error: BaseException) -> dict[str, Any]:
    """Package a user exception with its formatted traceback for the trip home."""
    frames = error.__traceback__
    while frames is not None and frames.tb_next is not None and _is_ferry_frame(frames):
        frames = frames.tb_next  # start the remote traceback at the user's code
    tb = "".join(traceback.format_exception(type(error), error, frames))
    try:
        data = cloudpickle.dumps(error)
        pickle.loads(data)  # exceptions with odd __init__ signatures fail here
    except Exception:
        data = b""
    return {"exc": data, "tb": tb, "type": type(error).__name__, "repr": repr(error)}


_FERRY_DIR = __file__.rsplit("/", 1)[0] + "/"


def _is_ferry_frame(frames: Any) -> bool:
    return frames.tb_frame.f_code.co_filename.startswith(_FERRY_DIR)


def rebuild_exception(payload: dict[str, Any]) -> BaseException:
    """The local twin of a remote exception, with the remote traceback attached as a note."""
    error: BaseException | None = None
    if payload.get("exc"):
        try:
            error = pickle.loads(payload["exc"])
        except Exception:
            error = None
    if error is None:
        error = RemoteError(f"{payload.get('type', 'Exception')}: {payload.get('repr', '')}")
    tb = payload.get("tb")
    if tb and hasattr(error, "add_note"):
        error.add_note("\nRemote traceback:\n" + tb.rstrip())
    error.__ferry_remote_traceback__ = tb  # type: ignore[attr-defined]
    return error


def error_from_wire(payload: dict[str, str]) -> BaseException:
    """An error reported by the server (`{"type", "msg"}`) as a ferry.exception instance."""
    cls = getattr(exc_module, payload.get("type", ""), None)
    if isinstance(cls, type) and issubclass(cls, exc_module.Error):
        return cls(payload.get("msg", ""))
    return exc_module.ServerError(f"{payload.get('type')}: {payload.get('msg')}")
