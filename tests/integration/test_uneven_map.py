"""Fair dispatch of an uneven map with real containers: inputs that sleep 0, 1, ..., 9 s on a
function limited to 4 containers. Dispatch must not let one container hold inputs it cannot
start soon while the others are idle or starting (docs/architecture.md, "Dispatch").

The assertions are on which container ran which input, not on wall-clock time: running the
inputs in order, each on the first free container, puts the 4 longest on 4 different
containers and gives no container more than 15 s of the 45 s of work."""

from __future__ import annotations

import os
import time
from collections import defaultdict

import ferry

app = ferry.App("test-uneven-map")

SECONDS = list(range(10))
CONTAINERS = 4
# what in-order dispatch to the first free of 4 containers gives the busiest one (0+4+8 and
# 1+5+9 when all start together; e.g. 0+1+5+9 when one is ready before the others)
MOST_SECONDS_PER_CONTAINER = 15


@app.function(max_containers=CONTAINERS)
def uneven(seconds: int) -> tuple[int, str, int]:
    time.sleep(seconds)
    return seconds, os.environ["FERRY_CONTAINER_ID"], os.getpid()


@app.function()
def map_from_inside() -> list[tuple[int, str, int]]:
    return list(uneven.map(SECONDS))


def _check_fair(results: list[tuple[int, str, int]]) -> None:
    assert [seconds for seconds, _, _ in results] == SECONDS
    ran_on = {seconds: container for seconds, container, _ in results}
    by_container: dict[str, list[int]] = defaultdict(list)
    for seconds, container in ran_on.items():
        by_container[container].append(seconds)
    summary = dict(by_container)
    assert len(by_container) == CONTAINERS, summary
    longest = sorted(SECONDS)[-CONTAINERS:]
    assert len({ran_on[s] for s in longest}) == CONTAINERS, f"the 4 longest shared containers: {summary}"
    for container, inputs in by_container.items():
        assert sum(inputs) <= MOST_SECONDS_PER_CONTAINER, f"{container} ran more than a fair share: {summary}"


def test_uneven_map_spreads_over_the_allowed_containers(server):
    with app.run(show_logs=False):
        started = time.monotonic()
        results = list(uneven.map(SECONDS))
        elapsed = time.monotonic() - started
    _check_fair(results)
    print(f"uneven map: {elapsed:.1f}s")


def test_uneven_map_called_from_inside_a_function_spreads_too(server):
    with app.run(show_logs=False):
        started = time.monotonic()
        results = map_from_inside.remote()
        elapsed = time.monotonic() - started
    _check_fair(results)
    print(f"uneven map from inside a function: {elapsed:.1f}s")
