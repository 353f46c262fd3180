"""The journal of map inputs and outputs (server/journal.py): what a restart reads back, inputs
held back for GRACE (and never written when answered in time), and outputs made moot within
one batch left out of it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ferry.server import journal as journal_module
from ferry.server.journal import Journal, _compact
from ferry.server.store import Store


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(journal_module, "GRACE", 0.05)
    store = Store(tmp_path / "state.db")
    yield store
    store.close()


def _run(store: Store, steps, *, wait: float) -> None:
    """Run `steps(journal)` on a loop, then give the journal `wait` seconds to write."""
    async def main() -> None:
        steps(Journal(store))
        await asyncio.sleep(wait)

    asyncio.run(main())


def test_held_inputs_are_written_after_the_grace_and_read_back_as_a_restart_sees_them(store: Store) -> None:
    def steps(journal: Journal) -> None:
        journal.inputs("fc-a", "fu-1", "map", [(idx, {"data": b"%d" % idx}, None) for idx in range(3)])
        journal.output("fc-a", 1, {"status": "ok", "data": b"x", "idx": 1})
        journal.ack("fc-a", [0])  # answered within the grace: never written
        journal.inputs("fc-b", "fu-1", "map", [(0, {"data": b"y"}, "run")])

    _run(store, steps, wait=0.01)
    assert store.journaled_calls() == []  # (still held)
    _run(store, steps, wait=journal_module.GRACE * 4)
    assert store.journaled_calls() == [
        ("fc-a", "fu-1", "map", 1, None, {"data": b"1"}, {"status": "ok", "data": b"x", "idx": 1}),
        ("fc-a", "fu-1", "map", 2, None, {"data": b"2"}, None),
        ("fc-b", "fu-1", "map", 0, "run", {"data": b"y"}, None),
    ]

    def later(journal: Journal) -> None:  # records about written inputs go in the next batch
        journal.output("fc-a", 2, {"status": "ok", "data": b"z", "idx": 2})
        journal.ack("fc-a", [1])
        journal.drop("fc-b")

    _run(store, later, wait=journal_module.FLUSH_DELAY * 4)
    assert store.journaled_calls() == [
        ("fc-a", "fu-1", "map", 2, None, {"data": b"2"}, {"status": "ok", "data": b"z", "idx": 2})]


def test_a_stopping_server_writes_every_held_input(store: Store) -> None:
    async def main() -> None:
        journal = Journal(store)
        journal.inputs("fc-a", "fu-1", "map", [(0, {"data": b"0"}, None)])
        journal.flush()  # as Server.shutdown does

    asyncio.run(main())
    assert [row[:4] for row in store.journaled_calls()] == [("fc-a", "fu-1", "map", 0)]


def test_a_batch_leaves_out_outputs_a_later_ack_or_drop_makes_moot() -> None:
    runs = [("output", [(b"out", "fc-a", 0), (b"out", "fc-b", 0), (b"out", "fc-b", 1)]),
            ("drop", [("fc-a",)]),
            ("ack", [("fc-b", 0)])]
    assert _compact(runs) == [
        ("output", [(b"out", "fc-b", 1)]),
        ("drop", [("fc-a",)]),
        ("ack", [("fc-b", 0)]),
    ]


def test_failure_counts_are_kept_until_their_input_settles_or_its_call_is_dropped(store: Store) -> None:
    def steps(journal: Journal) -> None:
        journal.attempt("fc-a", 0, 1)
        journal.attempt("fc-a", 0, 2)      # the latest count wins
        journal.attempt("fc-a", 1, 1)
        journal.attempt("fc-b", 0, 1)
        journal.settled("fc-a", 1)         # finished: no count left
        journal.attempt("fc-c", 3, 1)

    _run(store, steps, wait=journal_module.FLUSH_DELAY * 4)
    assert store.input_attempts() == {("fc-a", 0): 2, ("fc-b", 0): 1, ("fc-c", 3): 1}
    _run(store, lambda journal: journal.drop("fc-b"), wait=journal_module.FLUSH_DELAY * 4)
    assert store.input_attempts() == {("fc-a", 0): 2, ("fc-c", 3): 1}
    store.forget_input_attempts([("fc-c", 3)])  # a restarted server: its caller never came back
    assert store.input_attempts() == {("fc-a", 0): 2}


def test_a_batch_leaves_out_failure_counts_of_calls_dropped_later() -> None:
    runs = [("attempt", [("fc-a", 0, 1), ("fc-b", 0, 1)]), ("drop", [("fc-a",)])]
    assert _compact(runs) == [("attempt", [("fc-b", 0, 1)]), ("drop", [("fc-a",)])]
