"""Group commits of the inputs and outputs of `.map()` calls: what they survive a SIGKILL of
the server with (docs/reliability.md, "Durable inputs").

The scheduler records each input of a durable call, each output and each acknowledgement of
the caller (`call.ack`) here. Nothing is written per input:

  1. grace   an input is held in memory for GRACE first; one that is answered and
             acknowledged by then (most inputs of a busy map) is never written at all
  2. batch   what is left (inputs older than GRACE, with their output if they have one; outputs
             and acknowledgements of inputs written already; dropped calls) is written every
             FLUSH_DELAY while there is some, in one transaction (`Store.write_journal`)

A row lives from its input's write until its caller has acknowledged the output, or until the
call is cancelled. The failures of an input that will be retried (of a call of any kind) are
written the same way, to `input_attempts`, until the input finishes: a restart does not give
it its retries afresh. The writes happen on the event loop (a writer thread of their own was
slower: it and the loop contend for the interpreter lock).

Nothing is lost by holding inputs back: a caller keeps each input until its output arrives,
and after a restart of the server it sends again, under the same call id and index, whatever
the server does not hold (`call.resume`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from .model import now
from .store import Store, pack

log = logging.getLogger("ferry.server")

GRACE = 1.0          # seconds an input waits in memory before it is written
FLUSH_DELAY = 0.005  # how long records wait for others before they are written together


class Journal:
    """Buffered writes of the `call_inputs` table (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        # inputs not written yet: call -> idx -> [function id, kind, method, args, output]
        self._held: dict[str, dict[int, list[Any]]] = {}
        self._arrivals: deque[tuple[float, str, int]] = deque()  # (when, call, idx), oldest first
        self._runs: list[tuple[str, list[tuple]]] = []  # records about written inputs, in order
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    # -- records ---------------------------------------------------------------------------
    def inputs(self, call_id: str, function_id: str, kind: str,
               items: list[tuple[int, dict[str, Any], str | None]]) -> None:
        """Inputs `(idx, args, method)` of a call."""
        stamp = now()
        held = self._held.setdefault(call_id, {})
        for idx, args, method in items:
            held[idx] = [function_id, kind, method, args, None]
            self._arrivals.append((stamp, call_id, idx))
        self._schedule(stamp + GRACE)

    def output(self, call_id: str, idx: int, item: dict[str, Any]) -> None:
        held = self._held.get(call_id, {}).get(idx)
        if held is not None:
            held[4] = item  # written with its input, if it is written at all
        else:
            self._add("output", (item, call_id, idx))

    def ack(self, call_id: str, idxs: list[int]) -> None:
        """The caller has the outputs of `idxs`: forget them."""
        held = self._held.get(call_id, {})
        for idx in idxs:
            if held.pop(idx, None) is None:
                self._add("ack", (call_id, idx))

    def attempt(self, call_id: str, idx: int, attempt: int) -> None:
        """Input `idx` of a call (of any kind) has failed `attempt` times and will be retried:
        a restart of the server keeps the count."""
        self._add("attempt", (call_id, idx, attempt))

    def settled(self, call_id: str, idx: int) -> None:
        """Input `idx`, whose failures were recorded, will not run again: forget its count."""
        self._add("settled", (call_id, idx))

    def drop(self, call_id: str) -> None:
        """Forget every input of a call (acknowledged in full, or cancelled)."""
        self._held.pop(call_id, None)
        self._add("drop", (call_id,))

    def _add(self, kind: str, row: tuple) -> None:
        if self._runs and self._runs[-1][0] == kind:
            self._runs[-1][1].append(row)
        else:
            self._runs.append((kind, [row]))
        self._schedule(now() + FLUSH_DELAY)

    # -- writing ---------------------------------------------------------------------------
    def _schedule(self, at: float) -> None:
        if self._timer is not None and self._timer_at <= at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = asyncio.get_running_loop().call_at(
            asyncio.get_running_loop().time() + max(0.0, at - now()), self._due)

    def _due(self) -> None:
        self._timer = None
        self.flush(everything=False)

    def flush(self, *, everything: bool = True) -> None:
        """Write, in one transaction, the records gathered and the held inputs older than
        GRACE (all held inputs if `everything`, as when the server stops)."""
        cutoff = now() - GRACE
        rows = []
        while self._arrivals and (everything or self._arrivals[0][0] <= cutoff):
            _, call_id, idx = self._arrivals.popleft()
            held = self._held.get(call_id)
            entry = held.pop(idx, None) if held is not None else None
            if entry is None:  # answered and acknowledged, or dropped, in time
                continue
            if not held:
                del self._held[call_id]
            function_id, kind, method, args, output = entry
            rows.append((call_id, idx, function_id, kind, method, pack(args),
                         None if output is None else pack(output)))
        runs, self._runs = _compact(self._runs), []
        runs = [(kind, [_packed(kind, row) for row in rows_]) for kind, rows_ in runs]
        if rows:
            runs.append(("input", rows))
        if runs:
            try:
                self._store.write_journal(runs)
            except Exception:  # noqa: BLE001 - e.g. a full disk: callers keep their inputs (see above)
                log.exception("writing %d journal record(s) failed", sum(len(r) for _, r in runs))
        if self._arrivals:
            self._schedule(self._arrivals[0][0] + GRACE)


def _packed(kind: str, row: tuple) -> tuple:
    """A record about a written input as the store takes it (an output packed)."""
    return (pack(row[0]), row[1], row[2]) if kind == "output" else row


def _compact(runs: list[tuple[str, list[tuple]]]) -> list[tuple[str, list[tuple]]]:
    """`runs` without the outputs that a later `ack` (of their input) or `drop` (of their call)
    makes moot, and without acknowledgements of calls dropped later; in order otherwise."""
    dropped: set[str] = set()            # calls dropped by a later run
    acked: set[tuple[str, int]] = set()  # inputs acknowledged by a later run
    kept: list[tuple[str, list[tuple]]] = []
    for kind, rows in reversed(runs):
        if kind == "drop":
            dropped.update(row[0] for row in rows)
            kept.append((kind, rows))
        elif kind == "ack":
            kept.append((kind, [row for row in rows if row[0] not in dropped]))
            acked.update((row[0], row[1]) for row in rows)
        elif kind in ("attempt", "settled"):  # (call, idx, ...): failures of inputs
            kept.append((kind, [row for row in rows if row[0] not in dropped]))
        else:  # output: (item, call, idx)
            kept.append((kind, [row for row in rows if row[1] not in dropped and (row[1], row[2]) not in acked]))
    out: list[tuple[str, list[tuple]]] = []
    for kind, rows in reversed(kept):
        if not rows:
            continue
        if out and out[-1][0] == kind:
            out[-1][1].extend(rows)
        else:
            out.append((kind, rows))
    return out
