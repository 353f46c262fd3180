"""Log retention: each app keeps its log lines for FERRY_LOG_RETENTION_DAYS and at most
FERRY_LOG_RETENTION_MB_PER_APP of text; older or excess lines go, oldest first.

Enforced by the server's maintenance pass (server/maintenance.py) in a worker thread, through a
connection of its own to `state.db` (WAL: readers and the server's log writes go on), with
deletes by the `logs_by_app(app_id, seq)` index in batches of `BATCH` rows, each its own short
transaction, so the server's writes never wait long. Sequence numbers only grow, so a client
following `ferry app logs` never sees a line twice or out of order after a prune.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

BATCH = 2000
"""Rows deleted per transaction."""


@dataclass(frozen=True)
class LogRetention:
    """How much of each app's log to keep: `max_age` seconds and `max_bytes` of text
    (None: no limit of that kind)."""

    max_age: float | None
    max_bytes: int | None

    @classmethod
    def from_settings(cls) -> "LogRetention":
        from .. import _config

        days, megabytes = _config.get("log_retention_days"), _config.get("log_retention_mb_per_app")
        for name, value in (("FERRY_LOG_RETENTION_DAYS", days), ("FERRY_LOG_RETENTION_MB_PER_APP", megabytes)):
            if value < 0:
                from ..exception import InvalidError

                raise InvalidError(f"{name}={value} is negative: give a positive number, or 0 for no limit.")
        return cls(max_age=days * 86400 if days else None,
                   max_bytes=int(megabytes * 1024 * 1024) if megabytes else None)


def prune_logs(db_path: Path, retention: LogRetention, *, now: float | None = None) -> int:
    """Delete every app's log lines beyond `retention`; returns the number deleted. Blocking."""
    db = sqlite3.connect(str(db_path), isolation_level=None, timeout=30)
    try:
        deleted = 0
        apps = [row[0] for row in db.execute("SELECT DISTINCT app_id FROM logs").fetchall()]
        cutoff = None if retention.max_age is None else (now or time.time()) - retention.max_age
        for app_id in apps:
            if cutoff is not None:
                deleted += _delete_older(db, app_id, cutoff)
            if retention.max_bytes is not None:
                last = _last_beyond_size(db, app_id, retention.max_bytes)
                if last is not None:
                    deleted += _delete_batches(db, "seq<=?", (app_id, last))
        return deleted
    finally:
        db.close()


def _delete_older(db: sqlite3.Connection, app_id: str, cutoff: float) -> int:
    """Lines of `app_id` written before `cutoff`, oldest first, in batches."""
    first = db.execute("SELECT ts FROM logs WHERE app_id=? ORDER BY seq LIMIT 1", (app_id,)).fetchone()
    if first is None or first[0] >= cutoff:  # the oldest line is recent: nothing to do (a cheap look)
        return 0
    return _delete_batches(db, "ts<?", (app_id, cutoff))


def _last_beyond_size(db: sqlite3.Connection, app_id: str, max_bytes: int) -> int | None:
    """The newest seq of `app_id` whose line no longer fits in `max_bytes` counted from the
    newest line back (reads at most `max_bytes` of text), or None when everything fits."""
    total = 0
    for seq, size in db.execute("SELECT seq, length(CAST(text AS BLOB)) FROM logs WHERE app_id=? ORDER BY seq DESC",
                                (app_id,)):
        total += size
        if total > max_bytes:
            return seq
    return None


def _delete_batches(db: sqlite3.Connection, condition: str, params: tuple) -> int:
    """Delete the lines of an app (`params[0]`) that meet `condition`, oldest first, `BATCH`
    rows per transaction."""
    deleted = 0
    while True:
        count = db.execute(f"DELETE FROM logs WHERE seq IN (SELECT seq FROM logs WHERE app_id=? AND {condition} "
                           "ORDER BY seq LIMIT ?)", (*params, BATCH)).rowcount
        deleted += count
        if count < BATCH:
            return deleted


def log_bytes(db_path: Path) -> int:
    """Bytes of the database's pages that hold logs (the table and its index)."""
    db = sqlite3.connect(str(db_path), isolation_level=None, timeout=30)
    try:
        # (one b-tree per query: SQLite then reads only that b-tree's pages)
        return sum(int(db.execute("SELECT SUM(pgsize) FROM dbstat WHERE name=?", (name,)).fetchone()[0] or 0)
                   for name in ("logs", "logs_by_app"))
    except sqlite3.OperationalError:  # a SQLite built without the dbstat table: the text's size
        return int(db.execute("SELECT SUM(length(CAST(text AS BLOB))) FROM logs").fetchone()[0] or 0)
    finally:
        db.close()
