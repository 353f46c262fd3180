"""Served classes against a real server: @enter/@exit lifecycle, `parameter()`, calling
surfaces of methods, `@ferry.concurrent`, async methods and `with_options`."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

import ferry
from ferry.exception import FunctionTimeoutError, InvalidError

app = ferry.App("test-classes")

ENTER_COUNT = 0  # @enter runs per process: how often it ran in this one


@app.cls()
class Counter:
    @ferry.enter()
    def setup(self) -> None:
        global ENTER_COUNT
        ENTER_COUNT += 1
        self.enter_pid = os.getpid()
        self.calls = 0

    @ferry.method()
    def info(self) -> dict:
        self.calls += 1
        return {"pid": os.getpid(), "enter_pid": self.enter_pid, "enter_count": ENTER_COUNT, "calls": self.calls}


@app.cls()
class Model:
    size: int = ferry.parameter(default=1)
    label: str = ferry.parameter(default="model")

    @ferry.method()
    def predict(self, x: int) -> dict:
        return {"size": self.size, "label": self.label, "value": x * self.size, "pid": os.getpid()}


@app.cls()
class NeedsKey:
    key: str = ferry.parameter()

    @ferry.method()
    def get(self) -> str:
        return self.key


@app.cls()
class WithExit:
    out_dir: str = ferry.parameter()

    @ferry.exit()
    def teardown(self) -> None:
        Path(self.out_dir, "exited").write_text(str(os.getpid()))

    @ferry.method()
    def ping(self) -> int:
        return os.getpid()


MEETING = threading.Barrier(4)  # per container: passed only by four inputs running at once


@app.cls(max_containers=1)
@ferry.concurrent(max_inputs=4)
class Sleeper:
    @ferry.method()
    def pid(self) -> int:
        return os.getpid()

    @ferry.method()
    def meet(self, timeout: float) -> dict:
        """Wait until four inputs are in this method at the same time; BrokenBarrierError if
        they never are within `timeout` (inputs run one after another)."""
        return {"pid": os.getpid(), "arrived": MEETING.wait(timeout)}


@app.cls()
class AsyncModel:
    @ferry.enter()
    async def setup(self) -> None:
        await asyncio.sleep(0)
        self.offset = 100

    @ferry.method()
    async def add(self, x: int) -> int:
        await asyncio.sleep(0.01)
        return x + self.offset


@app.cls()
class Slow:
    @ferry.method()
    def wait(self, seconds: float) -> int:
        time.sleep(seconds)
        return os.getpid()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- lifecycle -----------------------------------------------------------------------------


def test_enter_runs_once_and_the_container_is_reused(server):
    with app.run(show_logs=False):
        obj = Counter()
        results = [obj.info.remote() for _ in range(3)]
    pids = {r["pid"] for r in results}
    assert len(pids) == 1
    assert results[0]["enter_pid"] == results[0]["pid"]
    assert [r["enter_count"] for r in results] == [1, 1, 1]
    assert [r["calls"] for r in results] == [1, 2, 3]  # one instance served every call


def test_exit_runs_when_the_app_stops(server, tmp_path):
    with app.run(show_logs=False):
        pid = WithExit(out_dir=str(tmp_path)).ping.remote()
        assert not (tmp_path / "exited").exists()
    assert (tmp_path / "exited").read_text() == str(pid)


# -- parameters ----------------------------------------------------------------------------


def test_parameter_value_reaches_the_instance(server):
    with app.run(show_logs=False):
        result = Model(size=3).predict.remote(2)
    assert (result["size"], result["value"], result["label"]) == (3, 6, "model")


def test_parameter_default_is_used(server):
    with app.run(show_logs=False):
        result = Model().predict.remote(2)
    assert (result["size"], result["value"]) == (1, 2)


def test_different_parameters_run_in_different_live_containers(server):
    with app.run(show_logs=False):
        small = Model(size=2).predict.remote(1)
        large = Model(size=5).predict.remote(1)
        small_again = Model(size=2).predict.remote(1)
        assert small["pid"] != large["pid"]
        assert small_again["pid"] == small["pid"]
        assert _alive(small["pid"]) and _alive(large["pid"])
    assert (small["size"], large["size"]) == (2, 5)


def test_unknown_parameter_raises_invalid_error():
    with pytest.raises(InvalidError, match="sise"):
        Model(sise=3)


def test_wrong_parameter_type_raises_invalid_error():
    with pytest.raises(InvalidError, match="size"):
        Model(size="3")


def test_missing_required_parameter_raises_invalid_error():
    with pytest.raises(InvalidError, match="key"):
        NeedsKey()


# -- calling surfaces ----------------------------------------------------------------------


def test_method_map(server):
    with app.run(show_logs=False):
        results = list(Model(size=3).predict.map([1, 2, 3]))
    assert [r["value"] for r in results] == [3, 6, 9]


def test_method_spawn(server):
    with app.run(show_logs=False):
        call = Model(size=4).predict.spawn(5)
        result = call.get(timeout=60)
    assert result["value"] == 20


def test_method_local_runs_enter_in_process():
    result = Counter().info.local()
    assert result["pid"] == os.getpid()
    assert result["enter_pid"] == os.getpid()
    assert result["calls"] == 1


def test_concurrent_class_serves_inputs_at_once_in_one_container(server):
    with app.run(show_logs=False):
        sleeper = Sleeper()
        warm_pid = sleeper.pid.remote()
        met = list(sleeper.meet.map([60.0] * 4))  # (the timeout only guards against a hang)
    assert {m["pid"] for m in met} == {warm_pid}
    assert sorted(m["arrived"] for m in met) == [0, 1, 2, 3]  # all four were running at once


def test_async_methods_and_async_enter(server):
    async def call_aio(obj: object) -> int:
        return await obj.add.remote.aio(2)  # type: ignore[attr-defined]

    with app.run(show_logs=False):
        obj = AsyncModel()
        assert obj.add.remote(1) == 101
        assert asyncio.run(call_aio(obj)) == 102
        assert list(obj.add.map([3, 4])) == [103, 104]


def test_with_options_timeout_applies(server):
    with app.run(show_logs=False):
        quick = Slow.with_options(timeout=1)()
        with pytest.raises(FunctionTimeoutError):
            quick.wait.remote(10)
        assert isinstance(Slow().wait.remote(1.5), int)  # the original keeps its default timeout


def test_with_options_keeps_parameters(server):
    with app.run(show_logs=False):
        result = Model.with_options(timeout=30)(size=7).predict.remote(1)
    assert result["size"] == 7


def test_class_without_methods_warns():
    other = ferry.App("test-classes-no-methods")
    with pytest.warns(UserWarning, match="no @ferry.method") as record:
        @other.cls()
        class Empty:
            pass
    assert record[0].filename == __file__  # points at the user's line
