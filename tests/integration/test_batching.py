"""Dynamic batching (`@ferry.batched`) with real containers: callers pass single inputs through
`.remote` (from several threads at once), `.map` and `.spawn`; the function receives lists of at
most `max_batch_size`, waiting at most `wait_ms` to fill one; each caller gets its own output;
an exception fails exactly the inputs of its batch; a wrong-length result is a clear error; the
autoscaler counts `max_batch_size` inputs per container; batched class methods and async
batched functions work."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections import defaultdict

import pytest

import ferry
from ferry._client import Client
from ferry.exception import InvalidError

from ..conftest import run_cli

app = ferry.App("test-batching")

WAIT_MS = 300


@app.function(max_containers=1)
@ferry.batched(max_batch_size=4, wait_ms=WAIT_MS)
def sizes(xs: list[int]) -> list[tuple[int, int, str]]:
    """Each output: (its input, the size of the batch it came in, an id of that batch)."""
    batch = uuid.uuid4().hex
    return [(x, len(xs), batch) for x in xs]


@app.function(max_containers=1)
@ferry.batched(max_batch_size=8, wait_ms=WAIT_MS)
def batch_add(xs: list[int], ys: list[int]) -> list[int]:
    return [x + y for x, y in zip(xs, ys)]


@app.function(max_containers=1)
@ferry.batched(max_batch_size=4, wait_ms=WAIT_MS)
def fails_on_negative(xs: list[int]) -> list[int]:
    if any(x < 0 for x in xs):
        raise ValueError(f"negative input in batch {sorted(xs)}")
    return [x * 10 for x in xs]


@app.function(max_containers=1)
@ferry.batched(max_batch_size=4, wait_ms=50)
def drops_one(xs: list[int]) -> list[int]:
    return xs[1:]


@app.function(max_containers=1)
@ferry.batched(max_batch_size=4, wait_ms=50)
def not_a_list(xs: list[int]) -> dict:
    return {x: x for x in xs}


@app.function(max_containers=1)
@ferry.batched(max_batch_size=4, wait_ms=WAIT_MS)
async def async_sizes(xs: list[int]) -> list[tuple[int, int]]:
    await asyncio.sleep(0.01)
    return [(x, len(xs)) for x in xs]


@app.function()  # default max_containers: the autoscaler decides how many start
@ferry.batched(max_batch_size=4, wait_ms=1000)
def slow_batch_pids(xs: list[int]) -> list[tuple[int, int]]:
    time.sleep(1)
    return [(os.getpid(), len(xs)) for _ in xs]


@app.cls(max_containers=1)
class Embedder:
    @ferry.enter()
    def load(self) -> None:
        self.scale = 10

    @ferry.method()
    @ferry.batched(max_batch_size=4, wait_ms=WAIT_MS)
    def embed(self, xs: list[int]) -> list[tuple[int, int]]:
        return [(x * self.scale, len(xs)) for x in xs]


def _batches(outputs: list[tuple[int, int, str]]) -> dict[str, list[tuple[int, int]]]:
    grouped: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for x, size, batch in outputs:
        grouped[batch].append((x, size))
    return grouped


def _check_batches(outputs: list[tuple[int, int, str]], max_size: int) -> dict[str, list[tuple[int, int]]]:
    grouped = _batches(outputs)
    for batch, members in grouped.items():
        reported = {size for _, size in members}
        assert reported == {len(members)}, (batch, members)  # the batch held exactly these callers
        assert len(members) <= max_size, members
    return grouped


def _remote_from_threads(fn, inputs: list[int]) -> dict[int, object]:
    results: dict[int, object] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(inputs))

    def call(x: int) -> None:
        barrier.wait()
        try:
            results[x] = fn.remote(x)
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=call, args=(x,)) for x in inputs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return results


def test_concurrent_remote_calls_are_batched_and_each_caller_gets_its_own_output(server):
    inputs = list(range(8))
    with app.run(show_logs=False):
        results = _remote_from_threads(sizes, inputs)
    assert sorted(results) == inputs
    for x, output in results.items():
        assert output[0] == x, (x, output)  # each caller got its own output
    grouped = _check_batches(list(results.values()), max_size=4)
    assert len(grouped) < len(inputs), grouped  # inputs that arrived together shared batches


def test_map_fills_batches_up_to_max_batch_size(server):
    with app.run(show_logs=False):
        outputs = list(sizes.map(range(10)))
    assert [x for x, _, _ in outputs] == list(range(10))  # in order, one output per input
    grouped = _check_batches(outputs, max_size=4)
    # all ten inputs were queued before the container was ready: batches are full but the last
    assert sorted(len(m) for m in grouped.values()) == [2, 4, 4], grouped


def test_spawned_calls_are_batched(server):
    with app.run(show_logs=False):
        handles = [sizes.spawn(x) for x in range(6)]
        outputs = [handle.get(timeout=60) for handle in handles]
    assert [x for x, _, _ in outputs] == list(range(6))
    _check_batches(outputs, max_size=4)


def test_several_arguments_become_one_list_each(server):
    with app.run(show_logs=False):
        assert batch_add.remote(1, 300) == 301
        assert list(batch_add.map([1, 2, 3], [10, 20, 30])) == [11, 22, 33]


def test_a_lone_input_waits_at_most_wait_ms(server):
    with app.run(show_logs=False):
        sizes.remote(0)  # the container is warm from here on
        started = time.monotonic()
        x, size, _ = sizes.remote(1)
        elapsed = time.monotonic() - started
    assert (x, size) == (1, 1)  # it ran alone, without waiting for a full batch of 4
    # it did wait for company (a lower bound: a slower machine only makes it longer; how much
    # longer than wait_ms it took is the machine's speed, not the behaviour)
    assert elapsed >= WAIT_MS / 1000 * 0.9, elapsed


def test_an_exception_fails_exactly_the_inputs_of_its_batch(server):
    inputs = [1, 2, 3, -1, 5, 6, 7, 8, 9, 10]
    with app.run(show_logs=False):
        outputs = list(fails_on_negative.map(inputs, return_exceptions=True))
    failed = [x for x, out in zip(inputs, outputs) if isinstance(out, BaseException)]
    succeeded = [x for x, out in zip(inputs, outputs) if not isinstance(out, BaseException)]
    assert -1 in failed and succeeded, outputs
    errors = {str(out) for out in outputs if isinstance(out, BaseException)}
    assert len(errors) == 1, errors  # one batch failed, with one exception
    (message,) = errors
    assert all(isinstance(out, ValueError) for out in outputs if isinstance(out, BaseException))
    # the failed inputs are exactly the members of the failing batch named in the message
    assert f"negative input in batch {sorted(failed)}" in message, (message, failed)
    assert len(failed) <= 4
    for x, out in zip(inputs, outputs):
        if x in succeeded:
            assert out == x * 10


def test_a_wrong_length_result_is_a_clear_error(server):
    with app.run(show_logs=False):
        with pytest.raises(Exception) as info:
            drops_one.remote(1)
        message = str(info.value)
        assert "1 input" in message and "a list of 0" in message, message
        outputs = list(drops_one.map(range(4), return_exceptions=True))
        assert all(isinstance(out, BaseException) for out in outputs), outputs
        assert all("returned a list of" in str(out) for out in outputs), outputs
        with pytest.raises(Exception) as info:
            not_a_list.remote(1)
        assert "must return a list" in str(info.value) and "dict" in str(info.value), str(info.value)


def test_async_batched_function(server):
    with app.run(show_logs=False):
        results = _remote_from_threads(async_sizes, list(range(6)))
        mapped = list(async_sizes.map(range(5)))
    assert all(results[x][0] == x and results[x][1] <= 4 for x in results), results
    assert [x for x, _ in mapped] == list(range(5))
    assert all(size <= 4 for _, size in mapped), mapped
    assert max(size for _, size in results.values()) > 1, results


def test_batched_method_on_a_class(server):
    with app.run(show_logs=False):
        embedder = Embedder()
        mapped = list(embedder.embed.map(range(6)))
        single = embedder.embed.remote(7)
    assert [x for x, _ in mapped] == [x * 10 for x in range(6)]
    assert all(1 <= size <= 4 for _, size in mapped) and max(s for _, s in mapped) == 4, mapped
    assert single == (70, 1)


def test_autoscaler_counts_max_batch_size_inputs_per_container(server):
    """Eight inputs of a function with max_batch_size=4 need two containers, not eight."""
    with app.run(show_logs=False):
        results = _remote_from_threads(slow_batch_pids, list(range(8)))
        info = Client.for_url(server.url).request_sync("app.show", app=app.app_id)
    (entry,) = [f for f in info["functions"] if f["tag"] == "slow_batch_pids"]
    assert entry["stats"]["containers_started"] == 2, entry
    assert len({pid for pid, _ in results.values()}) == 2, results
    assert all(size == 4 for _, size in results.values()), results


def test_batched_cannot_be_combined_with_concurrent():
    other = ferry.App("test-batching-invalid")
    with pytest.raises(InvalidError, match="concurrent"):
        @other.function()
        @ferry.concurrent(max_inputs=2)
        @ferry.batched(max_batch_size=4, wait_ms=10)
        def both(xs: list[int]) -> list[int]:
            return xs


def test_a_class_with_a_batched_method_has_no_other_methods():
    other = ferry.App("test-batching-invalid-cls")
    with pytest.raises(InvalidError, match="batched"):
        @other.cls()
        class Mixed:
            @ferry.method()
            @ferry.batched(max_batch_size=4, wait_ms=10)
            def many(self, xs: list[int]) -> list[int]:
                return xs

            @ferry.method()
            def one(self, x: int) -> int:
                return x


def test_batched_inference_example_runs(server):
    result = run_cli(["run", "examples/batched_inference.py"], server)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "positive (batch of 1)" in lines, result.stdout  # a lone .remote() is a batch of one
    assert "'review 1: the service was great' -> positive" in result.stdout
    summary = [line for line in lines if line.startswith("100 results from batches of up to ")]
    assert summary, result.stdout
    assert 1 < int(summary[0].rsplit(" ", 1)[1]) <= 32, summary  # the map was batched


def test_with_options_cannot_make_a_batched_function_concurrent():
    with pytest.warns(DeprecationWarning), pytest.raises(InvalidError, match="concurrent"):
        sizes.with_options(allow_concurrent_inputs=3)
    with pytest.warns(DeprecationWarning), pytest.raises(InvalidError, match="concurrent"):
        Embedder.with_options(allow_concurrent_inputs=3)
