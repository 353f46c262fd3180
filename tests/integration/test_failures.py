"""How failures reach the caller: user exceptions, serialization errors, timeouts, retries,
container crashes and start-up failures, all against a real server and real containers.

Files used to count attempts or to crash only once live in a pytest tmp dir passed to the
functions as an argument."""

from __future__ import annotations

import concurrent.futures
import ctypes
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

import ferry
from ferry.exception import (
    ContainerCrashError,
    FunctionTimeoutError,
    InvalidError,
    RemoteError,
    SerializationError,
)

app = ferry.App("test-failures")

HANG_LIMIT = 60.0  # a call that takes longer than this is considered hung


class CustomError(Exception):
    """A user exception type that the caller can import too."""


class LockedError(Exception):
    """A user exception that cannot be pickled: it holds a lock."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.lock = threading.Lock()


@app.function()
def raise_value_error() -> None:
    raise ValueError("bad")


@app.function()
def raise_custom_error(code: int) -> None:
    raise CustomError(f"custom {code}")


@app.function()
def raise_locked_error() -> None:
    raise LockedError("locked inside")


@app.function()
def touch(marker: str, value: Any) -> None:
    Path(marker).write_text("ran")


@app.function()
def return_lock() -> Any:
    return threading.Lock()


@app.function(timeout=1, max_containers=1)
def sleep_then_pid(seconds: float, woke: str | None = None) -> int:
    time.sleep(seconds)
    if woke is not None:  # the sleep's side effect: only a call that was not stopped gets here
        Path(woke).write_text(str(os.getpid()))
    return os.getpid()


def _record_attempt(counter: str) -> int:
    """Append this attempt's timestamp to `counter`; return the attempt number (1-based)."""
    with open(counter, "a") as f:
        f.write(f"{time.time()}\n")
    return len(Path(counter).read_text().splitlines())


@app.function(retries=2)
def fail_twice_retries_2(counter: str) -> str:
    attempt = _record_attempt(counter)
    if attempt <= 2:
        raise CustomError(f"attempt {attempt} fails")
    return f"succeeded on attempt {attempt}"


@app.function(retries=1)
def always_fail_retries_1(counter: str) -> None:
    attempt = _record_attempt(counter)
    raise CustomError(f"attempt {attempt} fails")


@app.function(retries=ferry.Retries(max_retries=2, backoff_coefficient=2.0, initial_delay=0.5))
def fail_twice_backoff(counter: str) -> str:
    attempt = _record_attempt(counter)
    if attempt <= 2:
        raise CustomError(f"attempt {attempt} fails")
    return "ok"


@app.function()
def exit_with_3() -> None:
    os._exit(3)


@app.function()
def segfault() -> None:
    ctypes.string_at(0)


@app.function(retries=1)
def crash_first_attempt(marker: str) -> str:
    if not os.path.exists(marker):
        Path(marker).write_text("crashed once")
        os._exit(3)
    return "recovered"


@app.function()
def exit_if(code: int | None) -> int:
    if code is not None:
        os._exit(code)
    return os.getpid()


@app.function(max_containers=1)
def times_ten_crash_on_two(x: int) -> int:
    if x == 2:
        os._exit(7)
    return x * 10


@app.cls()
class BrokenEnter:
    @ferry.enter()
    def setup(self) -> None:
        raise RuntimeError("enter failed on purpose")

    @ferry.method()
    def run(self, x: int) -> int:
        return x


def _within(seconds: float, fn: Callable[[], Any]) -> Any:
    """Run `fn` in a thread; fail the test if it has not finished after `seconds`."""
    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(fn)
    pool.shutdown(wait=False)
    # not future.result(timeout=): its TimeoutError is the builtin one, and so is a
    # FunctionTimeoutError raised by `fn`
    done, _ = concurrent.futures.wait([future], timeout=seconds)
    if not done:
        pytest.fail(f"the call did not finish within {seconds:g}s: it hangs")
    return future.result()


def _attempt_times(counter: Path) -> list[float]:
    return [float(line) for line in counter.read_text().splitlines()]


# -- user exceptions -----------------------------------------------------------------------


def test_remote_value_error_reraises_locally_with_remote_traceback(server):
    with app.run(show_logs=False):
        with pytest.raises(ValueError) as info:
            raise_value_error.remote()
    assert str(info.value) == "bad"
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "Remote traceback" in notes
    assert "raise_value_error" in notes
    assert 'raise ValueError("bad")' in notes  # the function's source line


def test_custom_exception_class_reraises_as_that_class(server):
    with app.run(show_logs=False):
        with pytest.raises(CustomError, match="custom 42") as info:
            raise_custom_error.remote(42)
    assert type(info.value) is CustomError


def test_unpicklable_exception_arrives_as_remote_error_with_its_repr(server):
    with app.run(show_logs=False):
        with pytest.raises(ferry.Error) as info:
            raise_locked_error.remote()
    assert type(info.value) is RemoteError
    assert "LockedError" in str(info.value)
    assert "locked inside" in str(info.value)


# -- serialization -------------------------------------------------------------------------


@pytest.mark.parametrize("make_arg", [threading.Lock, lambda: (x for x in range(3))], ids=["lock", "generator"])
def test_unpicklable_argument_raises_serialization_error_before_running(server, tmp_path, make_arg):
    marker = tmp_path / "ran"
    with app.run(show_logs=False):
        with pytest.raises(SerializationError) as info:
            touch.remote(str(marker), make_arg())
    message = str(info.value)
    assert "argument" in message
    assert "picklable" in message and "inside the function" in message  # says what to do
    assert not marker.exists()


def test_unpicklable_return_value_raises_serialization_error(server):
    with app.run(show_logs=False):
        with pytest.raises(SerializationError, match="return value"):
            return_lock.remote()


# -- timeouts ------------------------------------------------------------------------------


def test_timeout_raises_and_replaces_the_container(server, tmp_path):
    woke = tmp_path / "woke"
    with app.run(show_logs=False):
        first_pid = sleep_then_pid.remote(0)
        with pytest.raises(FunctionTimeoutError, match="longer than the function's timeout of 1s"):
            _within(HANG_LIMIT, lambda: sleep_then_pid.remote(10, str(woke)))
        # the container was stopped in the sleep: once its process is gone, the sleep's side
        # effect can never happen (had the call waited for the sleep, it would be there already)
        _wait_gone(first_pid)
        assert not woke.exists(), "the call waited for the sleep instead of timing out"
        second_pid = sleep_then_pid.remote(0)
    assert second_pid != first_pid
    assert not woke.exists()


def _wait_gone(pid: int) -> None:
    """Wait until process `pid` (a container of the process runtime) has ended."""
    deadline = time.monotonic() + HANG_LIMIT  # (a guard against a hang only)
    while Path(f"/proc/{pid}").exists() and _state(pid) != "Z":
        assert time.monotonic() < deadline, f"container process {pid} did not end"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


# -- retries -------------------------------------------------------------------------------


def test_retries_2_succeeds_on_third_attempt(server, tmp_path):
    counter = tmp_path / "attempts"
    with app.run(show_logs=False):
        assert fail_twice_retries_2.remote(str(counter)) == "succeeded on attempt 3"
    assert len(_attempt_times(counter)) == 3


def test_retries_1_raises_user_exception_after_two_attempts(server, tmp_path):
    counter = tmp_path / "attempts"
    with app.run(show_logs=False):
        with pytest.raises(CustomError, match="attempt 2 fails"):
            always_fail_retries_1.remote(str(counter))
    assert len(_attempt_times(counter)) == 2


def test_retries_backoff_spaces_attempts_increasingly(server, tmp_path):
    counter = tmp_path / "attempts"
    with app.run(show_logs=False):
        assert fail_twice_backoff.remote(str(counter)) == "ok"
    times = _attempt_times(counter)
    assert len(times) == 3
    first_gap, second_gap = times[1] - times[0], times[2] - times[1]
    assert first_gap >= 0.45  # initial_delay
    assert second_gap >= 0.95  # initial_delay * backoff_coefficient
    assert second_gap > first_gap


@pytest.mark.parametrize("kwargs", [
    {"max_retries": -1},
    {"max_retries": 11},
    {"max_retries": 2.5},
    {"max_retries": 2, "backoff_coefficient": 0.5},
    {"max_retries": 2, "initial_delay": -1.0},
    {"max_retries": 2, "max_delay": 1000.0},
    {"max_retries": 2, "backoff_coefficient": "fast"},
])
def test_invalid_retries_raise_invalid_error(kwargs):
    with pytest.raises(InvalidError):
        ferry.Retries(**kwargs)


@pytest.mark.parametrize("retries", ["3", -1, 1.5, True])
def test_invalid_retries_option_raises_invalid_error(retries):
    other = ferry.App("test-failures-invalid-retries")
    with pytest.raises(InvalidError):
        other.function(retries=retries)(lambda: None)


# -- crashes -------------------------------------------------------------------------------


def test_os_exit_raises_container_crash_error_naming_exit_code(server):
    with app.run(show_logs=False):
        with pytest.raises(ContainerCrashError) as info:
            _within(HANG_LIMIT, exit_with_3.remote)
    assert "exited with code 3" in str(info.value)


def test_segfault_raises_container_crash_error_naming_sigsegv(server):
    with app.run(show_logs=False):
        with pytest.raises(ContainerCrashError, match="SIGSEGV"):
            _within(HANG_LIMIT, segfault.remote)


def test_crash_on_first_attempt_is_retried(server, tmp_path):
    marker = tmp_path / "crashed"
    with app.run(show_logs=False):
        assert _within(HANG_LIMIT, lambda: crash_first_attempt.remote(str(marker))) == "recovered"
    assert marker.exists()


def test_function_keeps_working_after_a_crash(server):
    with app.run(show_logs=False):
        before = exit_if.remote(None)
        with pytest.raises(ContainerCrashError):
            _within(HANG_LIMIT, lambda: exit_if.remote(4))
        after = _within(HANG_LIMIT, lambda: exit_if.remote(None))
    assert isinstance(after, int) and after != before


def test_map_with_return_exceptions_yields_crash_for_the_crashing_input_only(server):
    with app.run(show_logs=False):
        results = _within(HANG_LIMIT, lambda: list(times_ten_crash_on_two.map(range(5), return_exceptions=True)))
    assert len(results) == 5
    assert isinstance(results[2], ContainerCrashError)
    assert [r for i, r in enumerate(results) if i != 2] == [0, 10, 30, 40]


# -- start-up failures ---------------------------------------------------------------------


def test_enter_failure_raises_promptly(server):
    with app.run(show_logs=False):
        with pytest.raises(RuntimeError, match="enter failed on purpose") as info:
            _within(HANG_LIMIT, lambda: BrokenEnter().run.remote(1))
    assert "setup" in "\n".join(getattr(info.value, "__notes__", []))  # where it failed


def test_enter_failure_fails_a_map_promptly(server):
    with app.run(show_logs=False):
        with pytest.raises(RuntimeError, match="enter failed on purpose"):
            _within(HANG_LIMIT, lambda: list(BrokenEnter().run.map(range(5))))
