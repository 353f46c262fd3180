"""How dispatch spreads queued inputs over ready containers (`scheduler.spread`), and which
containers can share a zygote (`zygote.interpreter_key`)."""

from __future__ import annotations

import pytest

from ferry.server.runtimes.zygote import interpreter_key
from ferry.server.scheduler import spread


@pytest.mark.parametrize("loads, limit, count, expected", [
    ([0], 1, 5, [1]),                       # one input at a time
    ([0, 0, 0], 2, 6, [2, 2, 2]),           # target_inputs=2 over three containers
    ([2, 2], 10, 2, [1, 1]),                # a burst above the target, evenly
    ([0, 2], 4, 4, [3, 1]),                 # the least loaded fill up first
    ([0, 5], 10, 4, [4, 0]),
    ([0, 0, 0], 10, 1, [1, 0, 0]),
    ([0, 0], 257, 1000, [257, 257]),        # never above the limit
    ([3, 4], 4, 5, [1, 0]),
    ([], 4, 5, []),
    ([1, 1], 4, 0, [0, 0]),
])
def test_spread_evens_out_loads_up_to_the_limit(loads, limit, count, expected):
    assert spread(loads, limit, count) == expected


def test_spread_never_gives_more_than_asked():
    for count in range(30):
        given = spread([0, 3, 1, 7], 8, count)
        assert sum(given) == min(count, 8 * 4 - 11)
        assert all(load + g <= 8 for load, g in zip([0, 3, 1, 7], given))


def test_interpreter_key_holds_only_what_an_interpreter_reads_at_start():
    base = {"PATH": "/bin", "PYTHONPATH": "/src", "LANG": "C.UTF-8", "SECRET_TOKEN": "x",
            "FERRY_CONTAINER_ID": "ct-1"}
    key = interpreter_key("/usr/bin/python3", base)
    assert key == ("/usr/bin/python3", (("LANG", "C.UTF-8"), ("PYTHONPATH", "/src")))
    other = dict(base, SECRET_TOKEN="y", FERRY_CONTAINER_ID="ct-2")
    assert interpreter_key("/usr/bin/python3", other) == key       # same zygote
    assert interpreter_key("/usr/bin/python3", dict(base, PYTHONPATH="/other")) != key
    assert interpreter_key("/venv/bin/python", base) != key
