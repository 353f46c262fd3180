"""How functions are called, against a real server and real containers: `.remote`, `.local`,
`.map` (ordering, exceptions, several iterables, streaming), `.starmap`, `.for_each`, `.spawn`
and `FunctionCall`, generators, async functions, the `.aio` forms, `with_options`, large
payloads, calls outside `app.run()`, serialized and nested functions, and two apps at once."""

from __future__ import annotations

import asyncio
import os
import time
import tracemalloc
from pathlib import Path

import pytest

import ferry
from ferry.exception import ExecutionError, FunctionTimeoutError, InputCancellation, InvalidError
from ferry.exception import TimeoutError as FerryTimeoutError

app = ferry.App("test-calls")

MIB = 1024 * 1024


@app.function()
def square(x: int) -> int:
    return x * x


@app.function()
def getpid() -> int:
    return os.getpid()


@app.function()
def add(a: int, b: int) -> int:
    return a + b


@app.function()
def affine(x: int, *, factor: int = 1, offset: int = 0) -> int:
    return x * factor + offset


@app.function()
def fail_on(x: int, bad: tuple[int, ...]) -> int:
    if x in bad:
        raise KeyError(f"bad input {x}")
    return x * 10


@app.function()
def touch(directory: str, name: str) -> str:
    Path(directory, name).write_text(name)
    return name


@app.function()
def wait_for_release(directory: str, value: int) -> int:
    """Announce the start (file `started`), then block until the file `release` exists."""
    Path(directory, "started").write_text(str(os.getpid()))
    deadline = time.monotonic() + 120
    while not Path(directory, "release").exists():
        if time.monotonic() > deadline:
            raise RuntimeError("never released")
        time.sleep(0.02)
    return value


@app.function()
def fail_first_attempt(directory: str, value: int) -> int:
    """Fail on the first attempt ever made for `directory`, succeed afterwards."""
    attempts = Path(directory, "attempts")
    count = int(attempts.read_text()) if attempts.exists() else 0
    attempts.write_text(str(count + 1))
    if count == 0:
        raise RuntimeError("first attempt fails")
    return value


@app.function()
def count_up(n: int):
    for i in range(n):
        yield i


@app.function()
async def async_count_up(n: int):
    for i in range(n):
        await asyncio.sleep(0)
        yield i * 10


@app.function()
async def async_double(x: int) -> int:
    await asyncio.sleep(0.001)
    return 2 * x


@app.function()
def payload_echo(data: bytes) -> tuple[int, bytes]:
    """Return the size of what arrived, and a fresh 3 MiB result derived from it."""
    return len(data), bytes(reversed(data[: 3 * MIB]))


@app.function()
def first_of(x: int, pad: bytes) -> int:
    return x


@app.function(serialized=True)
def serialized_cube(x: int) -> int:
    return x ** 3


def _make_adder(n: int) -> ferry.Function:
    @app.function()
    def add_n(x: int) -> int:
        return x + n  # `n` comes from the enclosing scope: the closure must be pickled

    return add_n


add_seven = _make_adder(7)


# Two apps that declare a function with the same tag, run at the same time.
app_a = ferry.App("test-calls-a")
app_b = ferry.App("test-calls-b")


@app_a.function(name="whoami")
def whoami_a(x: int) -> str:
    return f"a{x}"


@app_b.function(name="whoami")
def whoami_b(x: int) -> str:
    return f"b{x}"


# An app that is never run: its functions cannot be called.
never_run_app = ferry.App("test-calls-never-run")


@never_run_app.function()
def never_run(x: int) -> int:
    return x


# An app that is run and stopped before its function is called.
stopped_app = ferry.App("test-calls-stopped")


@stopped_app.function()
def after_stop(x: int) -> int:
    return x


@pytest.fixture(scope="module")
def running(server):
    with app.run(show_logs=False):
        yield app


def _wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout}s"
        time.sleep(0.02)


# -- .remote and .local ------------------------------------------------------------------


def test_remote_returns_value(running):
    assert square.remote(12) == 144


def test_remote_runs_in_another_process_and_local_in_this_one(running):
    assert getpid.remote() != os.getpid()
    assert getpid.local() == os.getpid()
    assert square.local(5) == 25


# -- .map ------------------------------------------------------------------------------------


def test_map_returns_results_in_input_order(running):
    assert list(square.map(range(50))) == [x * x for x in range(50)]


def test_map_unordered_returns_every_result(running):
    results = list(square.map(range(50), order_outputs=False))
    assert sorted(results) == [x * x for x in range(50)]


def test_map_return_exceptions_yields_errors_in_place(running):
    results = list(fail_on.map(range(6), kwargs={"bad": (1, 4)}, return_exceptions=True))
    assert len(results) == 6
    for x, result in enumerate(results):
        if x in (1, 4):
            assert isinstance(result, KeyError), result
            assert f"bad input {x}" in str(result)
        else:
            assert result == x * 10


def test_map_without_return_exceptions_raises_remote_type(running):
    with pytest.raises(KeyError, match="bad input 3"):
        list(fail_on.map(range(6), kwargs={"bad": (3,)}))


def test_map_zips_several_iterables(running):
    assert list(add.map([1, 2, 3], [10, 20, 30])) == [11, 22, 33]


def test_starmap_unpacks_argument_tuples(running):
    assert list(add.starmap([(1, 2), (3, 4), (5, 6)])) == [3, 7, 11]


def test_map_kwargs_are_passed_to_every_input(running):
    assert list(affine.map([1, 2, 3], kwargs={"factor": 3, "offset": 1})) == [4, 7, 10]


def test_for_each_runs_every_input_and_returns_none(running, tmp_path):
    names = [f"file-{i}" for i in range(20)]
    assert touch.for_each([str(tmp_path)] * len(names), names) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


def test_map_streams_100k_inputs_from_a_generator(running):
    n = 100_000
    produced = {"count": 0, "at_first_result": None}

    def note(i: int) -> int:
        produced["count"] += 1
        return i

    # each input carries 2 KiB, so holding all of them at once would take well over 200 MiB
    xs = (note(i) for i in range(n))
    pads = (bytes(2048) for _ in range(n))
    tracemalloc.start()
    try:
        total = count = 0
        for value in first_of.map(xs, pads):
            if produced["at_first_result"] is None:
                produced["at_first_result"] = produced["count"]
            total += value
            count += 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert count == n
    assert total == n * (n - 1) // 2
    # the client never holds anything like all inputs at once
    assert peak < 150 * MIB, f"client allocations peaked at {peak / MIB:.0f} MiB"
    # and results flow while the input generator is still being consumed
    assert produced["at_first_result"] < n


# -- .spawn and FunctionCall -------------------------------------------------------------------


def test_spawn_returns_function_call_and_get_returns_result(running):
    call = square.spawn(9)
    assert isinstance(call, ferry.FunctionCall)
    assert call.get() == 81


def test_get_with_timeout_on_slow_call_raises_timeout_error(running, tmp_path):
    call = wait_for_release.spawn(str(tmp_path), 5)
    _wait_for(tmp_path / "started")
    with pytest.raises(FerryTimeoutError):
        call.get(timeout=0.5)
    (tmp_path / "release").write_text("")
    assert call.get(timeout=60) == 5


def test_function_call_from_id_gets_result(running):
    call = square.spawn(11)
    assert ferry.FunctionCall.from_id(call.object_id).get() == 121


def test_cancel_running_call_makes_get_raise_input_cancellation(running, tmp_path):
    call = wait_for_release.spawn(str(tmp_path), 1)
    _wait_for(tmp_path / "started")
    call.cancel()
    with pytest.raises(InputCancellation):
        call.get(timeout=60)


# -- generators and async functions ------------------------------------------------------------


def test_remote_gen_yields_items_in_order(running):
    assert list(count_up.remote_gen(5)) == [0, 1, 2, 3, 4]


def test_remote_on_generator_raises_invalid_error(running):
    with pytest.raises(InvalidError, match="remote_gen"):
        count_up.remote(3)


def test_async_generator_remote_gen_yields_items_in_order(running):
    assert list(async_count_up.remote_gen(4)) == [0, 10, 20, 30]


def test_remote_on_async_generator_raises_invalid_error(running):
    with pytest.raises(InvalidError):
        async_count_up.remote(3)


def test_async_function_remote_and_map(running):
    assert async_double.remote(21) == 42
    assert list(async_double.map(range(10))) == [2 * x for x in range(10)]


# -- .aio forms --------------------------------------------------------------------------------


def test_aio_forms_from_an_event_loop(running):
    async def main() -> tuple[int, list[int], int, list[int]]:
        single = await square.remote.aio(6)
        mapped = [r async for r in square.map.aio([1, 2, 3])]
        call = await square.spawn.aio(8)
        spawned = await call.get.aio()
        items = [i async for i in count_up.remote_gen.aio(3)]
        return single, mapped, spawned, items

    assert asyncio.run(main()) == (36, [1, 4, 9], 64, [0, 1, 2])


# -- with_options ------------------------------------------------------------------------------


def test_with_options_returns_working_variant(running):
    variant = square.with_options(timeout=30, retries=2)
    assert variant.remote(5) == 25
    assert list(variant.map([1, 2])) == [1, 4]


def test_with_options_retries_apply_to_the_variant(running, tmp_path):
    variant = fail_first_attempt.with_options(retries=ferry.Retries(max_retries=2, initial_delay=0.0))
    assert variant.remote(str(tmp_path), 3) == 3
    assert (tmp_path / "attempts").read_text() == "2"


def test_with_options_timeout_applies_to_the_variant(running, tmp_path):
    variant = wait_for_release.with_options(timeout=2)
    with pytest.raises(FunctionTimeoutError):
        variant.remote(str(tmp_path), 1)


# -- payloads ----------------------------------------------------------------------------------


def test_payloads_over_2_mib_round_trip_both_ways(running):
    data = os.urandom(3 * MIB)
    size, result = payload_echo.remote(data)
    assert size == 3 * MIB
    assert len(result) == 3 * MIB
    assert result == bytes(reversed(data))


# -- outside app.run() -------------------------------------------------------------------------


def test_call_outside_app_run_raises_execution_error(server):
    with pytest.raises(ExecutionError, match=r"app\.run|ferry run"):
        never_run.remote(1)


def test_call_after_app_run_ended_raises_execution_error(server):
    with stopped_app.run(show_logs=False):
        assert after_stop.remote(4) == 4
    with pytest.raises(ExecutionError, match=r"app\.run|ferry run"):
        after_stop.remote(4)


# -- serialized and nested functions -----------------------------------------------------------


def test_serialized_function_runs(running):
    assert serialized_cube.remote(3) == 27


def test_nested_closure_function_runs(running):
    assert add_seven.remote(5) == 12
    assert list(add_seven.map([0, 1])) == [7, 8]


# -- two apps at once --------------------------------------------------------------------------


def test_two_running_apps_do_not_interfere(server):
    with app_a.run(show_logs=False):
        with app_b.run(show_logs=False):
            assert app_a.app_id != app_b.app_id
            assert whoami_a.object_id != whoami_b.object_id
            call_a = whoami_a.spawn(0)
            assert list(whoami_b.map(range(5))) == [f"b{i}" for i in range(5)]
            assert list(whoami_a.map(range(5))) == [f"a{i}" for i in range(5)]
            assert whoami_b.remote(9) == "b9"
            assert call_a.get(timeout=60) == "a0"
        # stopping b leaves a running
        assert whoami_a.remote(2) == "a2"
