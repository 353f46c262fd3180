"""`ferry._serialization`: values, arguments and exceptions to bytes and back, with helpful
errors for what cannot be pickled and a RemoteError for exceptions that cannot be rebuilt."""

from __future__ import annotations

import datetime
import threading
from dataclasses import dataclass

import pytest

from ferry._serialization import (
    deserialize,
    deserialize_args,
    error_from_wire,
    rebuild_exception,
    serialize,
    serialize_args,
    serialize_exception,
)
from ferry.exception import (
    DeserializationError,
    FunctionTimeoutError,
    InvalidError,
    NotFoundError,
    RemoteError,
    SerializationError,
    ServerError,
)


@dataclass
class Point:
    x: int
    y: int


class CustomError(Exception):
    """A user exception with an ordinary constructor."""


class TwoArgError(Exception):
    """Pickles, but cannot be rebuilt: its __init__ needs two arguments, args holds one."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")


class LockedError(Exception):
    """Cannot be pickled at all: it holds a lock."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def _raised(error: BaseException) -> BaseException:
    """`error` after being raised, so it carries a traceback."""
    try:
        raise error
    except BaseException as caught:  # noqa: BLE001 - the point is to catch anything
        return caught


# ------------------------------------------------------------------ values


@pytest.mark.parametrize("value", [
    None, 0, -7, 3.5, "text", b"\x00\xff", [1, [2, 3]], {"a": (1, 2)}, {1, 2},
    datetime.datetime(2024, 1, 2, 3, 4, 5), Point(1, 2), b"x" * (3 * 1024 * 1024),
])
def test_serialize_round_trips(value):
    assert deserialize(serialize(value)) == value


def test_lambdas_and_closures_round_trip():
    offset = 10
    fn = deserialize(serialize(lambda v: v + offset))
    assert fn(5) == 15


def test_args_round_trip():
    data = serialize_args((1, "two"), {"three": [3], "point": Point(4, 5)})
    assert deserialize_args(data) == ((1, "two"), {"three": [3], "point": Point(4, 5)})


def test_unpicklable_value_raises_serialization_error_saying_what_and_how_to_fix():
    with pytest.raises(SerializationError) as info:
        serialize({"lock": threading.Lock()}, what="return value")
    message = str(info.value)
    assert "return value" in message
    assert "lock" in message
    assert "picklable" in message


def test_unpicklable_argument_names_the_arguments():
    with pytest.raises(SerializationError, match="function arguments"):
        serialize_args((threading.Lock(),), {})


def test_garbage_bytes_raise_deserialization_error():
    with pytest.raises(DeserializationError, match="Could not deserialize the return value"):
        deserialize(b"not a pickle", what="return value")


# ------------------------------------------------------------------ exceptions


@pytest.mark.parametrize("error", [
    ValueError("bad value"),
    KeyError("missing"),
    CustomError("custom failure"),
    InvalidError("wrong option"),
])
def test_exception_round_trip_keeps_type_and_message(error):
    rebuilt = rebuild_exception(serialize_exception(_raised(error)))
    assert type(rebuilt) is type(error)
    assert str(rebuilt) == str(error)


def test_rebuilt_exception_carries_the_remote_traceback_as_a_note():
    payload = serialize_exception(_raised(CustomError("custom failure")))
    rebuilt = rebuild_exception(payload)
    notes = getattr(rebuilt, "__notes__", [])
    assert len(notes) == 1
    note = notes[0]
    assert "Remote traceback" in note
    assert "_raised" in note  # the frame that raised it
    assert "CustomError: custom failure" in note
    assert rebuilt.__ferry_remote_traceback__ == payload["tb"]


def test_payload_describes_the_exception():
    payload = serialize_exception(_raised(ValueError("bad value")))
    assert payload["type"] == "ValueError"
    assert payload["repr"] == "ValueError('bad value')"
    assert "Traceback (most recent call last)" in payload["tb"]


@pytest.mark.parametrize("error, type_name", [
    (TwoArgError(404, "not here"), "TwoArgError"),
    (LockedError("locked up"), "LockedError"),
])
def test_exception_that_cannot_be_rebuilt_becomes_remote_error_with_its_repr(error, type_name):
    payload = serialize_exception(_raised(error))
    rebuilt = rebuild_exception(payload)
    assert type(rebuilt) is RemoteError
    assert str(rebuilt) == f"{type_name}: {error!r}"
    assert any(type_name in note for note in rebuilt.__notes__)


def test_payload_whose_exception_bytes_cannot_be_unpickled_becomes_remote_error():
    payload = serialize_exception(_raised(ValueError("bad value")))
    payload["exc"] = b"truncated"
    rebuilt = rebuild_exception(payload)
    assert type(rebuilt) is RemoteError
    assert "ValueError" in str(rebuilt)


# ------------------------------------------------------------------ server errors


@pytest.mark.parametrize("name, cls", [
    ("InvalidError", InvalidError),
    ("NotFoundError", NotFoundError),
    ("FunctionTimeoutError", FunctionTimeoutError),
])
def test_server_error_payload_becomes_the_named_ferry_error(name, cls):
    error = error_from_wire({"type": name, "msg": "details"})
    assert type(error) is cls
    assert str(error) == "details"


@pytest.mark.parametrize("name", ["KeyError", "Nonexistent", "deprecation_warning"])
def test_unknown_server_error_type_becomes_server_error(name):
    error = error_from_wire({"type": name, "msg": "details"})
    assert type(error) is ServerError
    assert name in str(error) and "details" in str(error)
