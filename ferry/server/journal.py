"""Group commits of call inputs and outputs: what `.remote()` and `.map()` calls survive a
SIGKILL of the server with (docs/reliability.md, "Durable inputs").

The scheduler records each accepted input, each finished output and each acknowledgement
here; the records are buffered and written once per event-loop turn, in one transaction
(`Store.write_journal`), never one write per input. A row lives from its input's arrival until
its caller has acknowledged the output (`call.ack`), or until the call is cancelled.

Records that a later one makes moot in the same batch (the input, output and acknowledgement
of a `.remote()` answered before the batch is written) are left out of it.

A caller keeps each input until its output arrives and sends again, under the same call id and
index, whatever the server does not hold after a restart (`call.resume`), so an input lost in a
batch that was not yet written is sent again, never lost.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .store import Store, pack

log = logging.getLogger("ferry.server")

# how long records wait for others before they are written together
FLUSH_DELAY = 0.005


class Journal:
    """Buffered writes of the `call_inputs` table, flushed once per loop turn."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._runs: list[tuple[str, list[tuple]]] = []
        self._scheduled = False

    def _add(self, kind: str, row: tuple) -> None:
        if self._runs and self._runs[-1][0] == kind:
            self._runs[-1][1].append(row)
        else:
            self._runs.append((kind, [row]))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(FLUSH_DELAY, self.flush)

    def input(self, call_id: str, idx: int, function_id: str, kind: str, method: str | None,
              args: dict[str, Any]) -> None:
        self._add("input", (call_id, idx, function_id, kind, method, pack(args)))

    def output(self, call_id: str, idx: int, item: dict[str, Any]) -> None:
        self._add("output", (pack(item), call_id, idx))

    def ack(self, call_id: str, idxs: list[int]) -> None:
        """The caller has the outputs of `idxs`: forget them."""
        for idx in idxs:
            self._add("ack", (call_id, idx))

    def drop(self, call_id: str) -> None:
        """Forget every input of a call (acknowledged in full, or cancelled)."""
        self._add("drop", (call_id,))

    def flush(self) -> None:
        self._scheduled = False
        runs, self._runs = self._runs, []
        if runs:
            runs = _compact(runs)
            if runs:
                self._store.write_journal(runs)


def _compact(runs: list[tuple[str, list[tuple]]]) -> list[tuple[str, list[tuple]]]:
    """`runs` without the rows that a later `drop` (of their call) or `ack` (of their input)
    undoes. The drop or ack itself stays (earlier batches may have written the rows), except an
    ack of an input written in this very batch: each input is written once, so no earlier
    batch holds it (a warm `.remote()` acknowledged within the batch writes nothing at all)."""
    out: list[tuple[str, list[tuple]]] = []
    for kind, rows in runs:
        if kind in ("drop", "ack") and out:
            gone = {row[0] for row in rows} if kind == "drop" else {(row[0], row[1]) for row in rows}
            kept, unwritten = [], set()
            for earlier, earlier_rows in out:
                left = []
                for row in earlier_rows:
                    if _key(earlier, row, kind) not in gone:
                        left.append(row)
                    elif earlier == "input" and kind == "ack":
                        unwritten.add((row[0], row[1]))
                if left:
                    kept.append((earlier, left))
            out = kept
            if unwritten:
                rows = [row for row in rows if (row[0], row[1]) not in unwritten]
                if not rows:
                    continue
        if out and out[-1][0] == kind:
            out[-1][1].extend(rows)
        else:
            out.append((kind, rows))
    return out


def _key(kind: str, row: tuple, by: str) -> Any:
    """The call id (`by` drop) or (call id, index) (`by` ack) a row of `kind` is about."""
    call_id, idx = (row[1], row[2]) if kind == "output" else (row[0], row[1] if len(row) > 1 else None)
    return call_id if by == "drop" else (call_id, idx)
