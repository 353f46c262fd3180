"""The journal of call inputs and outputs (server/journal.py): group commits, what a restart
reads back, and rows made moot within one batch left out of it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ferry.server import journal as journal_module
from ferry.server.journal import Journal, _compact
from ferry.server.store import Store


def _flushed(store: Store, steps) -> None:
    """Run `steps(journal)` on a loop, then let the journal's batch be written."""
    async def main() -> None:
        journal = Journal(store)
        steps(journal)
        await asyncio.sleep(journal_module.FLUSH_DELAY * 4)

    asyncio.run(main())


def test_inputs_outputs_and_acks_read_back_as_a_restart_sees_them(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")

    def steps(journal: Journal) -> None:
        for idx in range(3):
            journal.input("fc-a", idx, "fu-1", "map", None, {"data": b"%d" % idx})
        journal.output("fc-a", 1, {"status": "ok", "data": b"x", "idx": 1})
        journal.ack("fc-a", [0])
        journal.input("fc-b", 0, "fu-1", "remote", "run", {"data": b"y"})

    _flushed(store, steps)
    assert store.journaled_calls() == [
        ("fc-a", "fu-1", "map", 1, None, {"data": b"1"}, {"status": "ok", "data": b"x", "idx": 1}),
        ("fc-a", "fu-1", "map", 2, None, {"data": b"2"}, None),
        ("fc-b", "fu-1", "remote", 0, "run", {"data": b"y"}, None),
    ]
    _flushed(store, lambda journal: journal.drop("fc-a"))
    assert [row[0] for row in store.journaled_calls()] == ["fc-b"]
    store.close()


def test_a_batch_leaves_out_what_a_later_drop_or_ack_undoes() -> None:
    runs = [("input", [("fc-a", 0, "fu", "remote", None, b""), ("fc-b", 0, "fu", "map", None, b""),
                       ("fc-b", 1, "fu", "map", None, b"")]),
            ("output", [(b"out", "fc-a", 0), (b"out", "fc-b", 0)]),
            ("drop", [("fc-a",)]),
            ("ack", [("fc-b", 0)])]
    assert _compact(runs) == [
        ("input", [("fc-b", 1, "fu", "map", None, b"")]),
        ("drop", [("fc-a",)]),
    ]  # (fc-b's input 0 was never written: its ack has nothing to delete)
    written_before = [("output", [(b"out", "fc-c", 0)]), ("ack", [("fc-c", 0)])]
    assert _compact(written_before) == [("ack", [("fc-c", 0)])]
    remote = [("input", [("fc-d", 0, "fu", "remote", None, b"")]), ("output", [(b"out", "fc-d", 0)]),
              ("ack", [("fc-d", 0)])]
    assert _compact(remote) == []
