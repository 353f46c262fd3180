"""The `queue.*` requests of wire API v1 (docs/architecture.md, "Dicts and queues").

Each queue is a set of FIFO partitions (the default one is the empty key ""). Items are rows
of `queue_items(seq, queue_id, partition, value)`, in `seq` order; `queue_partitions` holds each
partition's expiry (`partition_ttl` after its last put; an expired partition is emptied when
next touched, and by a sweep each minute). Taking items is one `DELETE ... RETURNING`
statement, so an item acknowledged to one getter is gone for every other, also after a crash.

Blocked requests wait on the server, never by polling: a `get` that finds its partition empty
waits on that partition's `Signal`, which every put to it sets; a blocked `put` to a full
partition waits on the partition's space signal, set by every get and clear. A waiter whose
connection closed, or that its client withdrew (`queue.withdraw`: the caller's `get.aio()`
was cancelled), takes nothing (what it would take stays for the next getter) and puts nothing.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any, Awaitable, Callable

from .._named_objects import (
    QUEUE_DEFAULT_PARTITION_TTL, QUEUE_MAX_ITEM_BYTES, QUEUE_MAX_PARTITION_ITEMS, QUEUE_MAX_PARTITION_KEY_BYTES,
    QUEUE_MAX_PARTITIONS, size_text,
)
from ..exception import InvalidError
from .access import ADMIN_ONLY, EVERYONE, Role
from .connection import Connection
from .shapes import Shape, optional, required
from .named_objects import NamedObjectRequests, NamedObjects

Handler = Callable[[Connection, dict[str, Any]], Awaitable[Any]]
Key = tuple[str, str]  # (queue id, partition)
SWEEP_SECONDS = 60.0
MAX_GET = 1_000  # items one get_many may take at once
PEEK_BYTES = 16 * 1024 * 1024


class Signal:
    """Wakes every waiter at once; each then checks again whether it can proceed."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.waiters = 0

    def set(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float | None, *stops: asyncio.Event) -> None:
        """Until set, `timeout` passes or one of `stops` is set."""
        self.waiters += 1
        waits = [asyncio.ensure_future(event.wait()) for event in (self._event, *stops)]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.waiters -= 1
            for wait in waits:
                wait.cancel()


def check_partition(partition: Any) -> str:
    """A partition key as stored ('' for the default partition)."""
    if partition is None:
        return ""
    if not isinstance(partition, str):
        raise InvalidError(f"A queue partition key is a string, got {type(partition).__name__}.")
    size = len(partition.encode())
    if not 1 <= size <= QUEUE_MAX_PARTITION_KEY_BYTES:
        raise InvalidError(f"Queue partition key {partition!r} is {size} bytes; partition keys must be 1 to "
                           f"{QUEUE_MAX_PARTITION_KEY_BYTES} bytes (UTF-8).")
    return partition


class QueueService(NamedObjectRequests):
    """Queues: their rows (`NamedObjects`), their items, and the requests waiting on them."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self._counts: dict[Key, int] = {}      # items per partition, loaded on first use
        self._expiry: dict[Key, float] = {}
        self._items: dict[Key, Signal] = {}  # set on put (only while someone waits)
        self._space: dict[Key, Signal] = {}  # set on get and clear
        self._closed: dict[int, asyncio.Event] = {}
        self._withdrawn: dict[tuple[int, str], asyncio.Event] = {}  # (connection, waiter) -> set to withdraw
        self._swept = 0.0
        self.objects = NamedObjects(db, table="queues", kind="Queue", prefix="qu", drop_data=self._drop_items)

    def handlers(self) -> dict[str, Handler]:
        return {f"queue.{name}": getattr(self, name) for name in (
            "get", "create", "drop_ephemeral", "list", "delete", "put", "take", "len", "clear", "peek",
            "withdraw")}

    @staticmethod
    def shapes() -> dict[str, Shape]:
        """The arguments each request reads (server/shapes.py); a queue is named by `name` or `id`."""
        ref = {"name": optional(str), "id": optional(str)}
        wait = {"block": optional(bool), "timeout": optional(int, float), "waiter": optional(str)}
        return {
            "queue.get": {**ref, "create_if_missing": optional(bool)},
            "queue.create": {"name": optional(str), "ephemeral": optional(bool), "allow_existing": optional(bool)},
            "queue.drop_ephemeral": {"id": required(str)},
            "queue.delete": {**ref, "allow_missing": optional(bool)},
            "queue.put": {**ref, **wait, "partition": optional(str), "values": optional(list, items=bytes),
                          "partition_ttl": optional(int)},
            "queue.take": {**ref, **wait, "partition": optional(str), "n": optional(int)},
            "queue.len": {**ref, "partition": optional(str), "total": optional(bool)},
            "queue.clear": {**ref, "partition": optional(str), "all": optional(bool)},
            "queue.peek": {**ref, "partition": optional(str), "after": optional(int), "limit": optional(int)},
            "queue.withdraw": {"waiter": required(str)},
        }

    @staticmethod
    def audiences() -> dict[str, frozenset[Role]]:
        """Containers use queues (named, by id, ephemeral); listing and deleting named queues is
        for administrators."""
        audiences = {f"queue.{name}": EVERYONE for name in (
            "get", "create", "drop_ephemeral", "put", "take", "len", "clear", "peek", "withdraw")}
        return {**audiences, "queue.list": ADMIN_ONLY, "queue.delete": ADMIN_ONLY}

    # -- bookkeeping ----------------------------------------------------------------------
    def _drop_items(self, queue_id: str) -> None:
        self.db.execute("DELETE FROM queue_items WHERE queue_id=?", (queue_id,))
        self.db.execute("DELETE FROM queue_partitions WHERE queue_id=?", (queue_id,))
        for key in [k for k in self._counts if k[0] == queue_id]:
            self._counts.pop(key, None)
            self._expiry.pop(key, None)
        for key in [k for k in (*self._items, *self._space) if k[0] == queue_id]:
            _wake(self._items, key)  # waiters check again: the queue may be gone
            _wake(self._space, key)

    def _count(self, key: Key) -> int:
        count = self._counts.get(key)
        if count is None:
            count = self._counts[key] = self.db.execute(
                "SELECT COUNT(*) FROM queue_items WHERE queue_id=? AND partition=?", key).fetchone()[0]
        return count

    def _expires(self, key: Key) -> float | None:
        if key not in self._expiry:
            found = self.db.execute("SELECT expires FROM queue_partitions WHERE queue_id=? AND partition=?",
                                    key).fetchone()
            if found is None:
                return None
            self._expiry[key] = found[0]
        return self._expiry[key]

    def _expire(self, key: Key) -> None:
        """Empty `key` if its TTL passed."""
        expires = self._expires(key)
        if expires is not None and expires <= time.time():
            self._drop_partition(key)

    def _check_again(self, key: Key) -> None:
        """After a wait: NotFoundError if the queue was deleted meanwhile; expire the partition."""
        self.objects.find({"id": key[0]})
        self._expire(key)

    def _drop_partition(self, key: Key) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute("DELETE FROM queue_items WHERE queue_id=? AND partition=?", key)
            self.db.execute("DELETE FROM queue_partitions WHERE queue_id=? AND partition=?", key)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self._counts[key] = 0
        self._expiry.pop(key, None)
        _wake(self._space, key)

    def _sweep(self, *, force: bool = False, queue_id: str | None = None) -> None:
        """Empty every expired partition (at most once a minute, on some request; `force`: now),
        or those of `queue_id`."""
        now = time.time()
        if queue_id is not None:
            expired = self.db.execute("SELECT queue_id, partition FROM queue_partitions WHERE queue_id=? AND "
                                      "expires<=?", (queue_id, now)).fetchall()
        elif force or now - self._swept >= SWEEP_SECONDS:
            self._swept = now
            expired = self.db.execute("SELECT queue_id, partition FROM queue_partitions WHERE expires<=?",
                                      (now,)).fetchall()
        else:
            return
        for key in expired:
            self._drop_partition(tuple(key))  # type: ignore[arg-type]

    def _closed_event(self, conn: Connection) -> asyncio.Event:
        """Set when `conn` closes (so its blocked requests stop waiting)."""
        event = self._closed.get(id(conn))
        if event is None:
            event = self._closed[id(conn)] = asyncio.Event()

            def closed() -> None:
                self._closed.pop(id(conn), None)
                event.set()

            conn.on_close.append(closed)
        return event

    def _withdrawal(self, conn: Connection, args: dict[str, Any]) -> tuple[str, asyncio.Event] | None:
        """For a request that may wait and names a `waiter`: the event `queue.withdraw` sets."""
        waiter = args.get("waiter")
        if not waiter:
            return None
        event = self._withdrawn[(id(conn), str(waiter))] = asyncio.Event()
        return str(waiter), event

    def _done_waiting(self, conn: Connection, withdrawal: tuple[str, asyncio.Event] | None) -> None:
        if withdrawal is not None:
            self._withdrawn.pop((id(conn), withdrawal[0]), None)

    async def withdraw(self, conn: Connection, args: dict) -> dict:
        """Stop the waiting `put`/`take` of this connection named `waiter` (its caller gave up):
        it answers as if its timeout had passed, having put or taken nothing."""
        event = self._withdrawn.pop((id(conn), str(args.get("waiter"))), None)
        if event is not None:
            event.set()
        return {"withdrawn": event is not None}

    def _key(self, args: dict[str, Any]) -> Key:
        self._sweep()
        row = self.objects.find(args)
        key = (row["id"], check_partition(args.get("partition")))
        self._expire(key)
        return key

    # -- queues (get, create, drop_ephemeral and delete: NamedObjectRequests) ----------
    async def list(self, conn: Connection, args: dict) -> list[dict]:
        self._sweep(force=True)
        counts: dict[str, tuple[int, int]] = {}
        for queue_id, partitions, items in self.db.execute(
                "SELECT queue_id, COUNT(DISTINCT partition), COUNT(*) FROM queue_items GROUP BY queue_id"):
            counts[queue_id] = (partitions, items)
        return [{**row, "partitions": counts.get(row["id"], (0, 0))[0], "items": counts.get(row["id"], (0, 0))[1]}
                for row in self.objects.list()]

    # -- items ----------------------------------------------------------------------------
    async def put(self, conn: Connection, args: dict) -> dict:
        """Append `values` (pickled items) to a partition, all or none. A full partition makes
        the request wait up to `timeout` seconds (forever if null; `block: false`: not at all);
        then it answers `{"full": true}`."""
        key = self._key(args)
        values = [bytes(v) for v in args.get("values") or []]
        ttl = args.get("partition_ttl", QUEUE_DEFAULT_PARTITION_TTL)
        if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 1:
            raise InvalidError(f"partition_ttl must be a whole number of seconds of at least 1, got {ttl!r}.")
        for value in values:
            if len(value) > QUEUE_MAX_ITEM_BYTES:
                raise InvalidError(f"Queue item too large: {size_text(len(value))} pickled, over the limit of "
                                   f"{size_text(QUEUE_MAX_ITEM_BYTES)} per item. Store large data in a Volume "
                                   "or a Dict and put a reference in the queue.")
        if len(values) > QUEUE_MAX_PARTITION_ITEMS:
            raise InvalidError(f"Cannot put {len(values):,} items at once: a queue partition holds at most "
                               f"{QUEUE_MAX_PARTITION_ITEMS:,} items.")
        if not values:
            return {"full": False}
        deadline = _deadline(args)
        stops = [self._closed_event(conn)]
        withdrawal = self._withdrawal(conn, args)
        if withdrawal is not None:
            stops.append(withdrawal[1])
        try:
            while self._count(key) + len(values) > QUEUE_MAX_PARTITION_ITEMS:
                remaining = _remaining(deadline)
                if remaining == 0 or any(stop.is_set() for stop in stops):
                    return {"full": True}
                await _wait(self._space, key, remaining, *stops)
                self._check_again(key)
            if any(stop.is_set() for stop in stops):
                return {"full": True}
        finally:
            self._done_waiting(conn, withdrawal)
        if self._expires(key) is None and self._count_partitions(key[0]) >= QUEUE_MAX_PARTITIONS:
            raise InvalidError(f"Queue already has {QUEUE_MAX_PARTITIONS:,} partitions, the most a queue may have; "
                               "clear some (queue.clear(partition=...)) or use another queue.")
        expires = time.time() + ttl
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany("INSERT INTO queue_items(queue_id, partition, value) VALUES (?, ?, ?)",
                                [(key[0], key[1], v) for v in values])
            self.db.execute("INSERT OR REPLACE INTO queue_partitions(queue_id, partition, expires) VALUES (?, ?, ?)",
                            (key[0], key[1], expires))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self._counts[key] = self._count(key) + len(values)
        self._expiry[key] = expires
        _wake(self._items, key)
        return {"full": False}

    def _count_partitions(self, queue_id: str) -> int:
        return self.db.execute("SELECT COUNT(*) FROM queue_partitions WHERE queue_id=?", (queue_id,)).fetchone()[0]

    async def take(self, conn: Connection, args: dict) -> list[bytes]:
        """Remove and return up to `n` items (oldest first). An empty partition makes the
        request wait up to `timeout` seconds (forever if null; `block: false`: not at all) for
        at least one item; then it answers []."""
        key = self._key(args)
        n = int(args.get("n", 1))
        if not 1 <= n <= MAX_GET:
            raise InvalidError(f"get_many(n_values={n}) must take 1 to {MAX_GET:,} items at a time.")
        deadline = _deadline(args)
        stops = [self._closed_event(conn)]
        withdrawal = self._withdrawal(conn, args)
        if withdrawal is not None:
            stops.append(withdrawal[1])
        try:
            return await self._take(key, n, deadline, stops)
        finally:
            self._done_waiting(conn, withdrawal)

    async def _take(self, key: Key, n: int, deadline: float | None, stops: list[asyncio.Event]) -> list[bytes]:
        while True:
            if any(stop.is_set() for stop in stops):
                return []
            if self._count(key):
                rows = self.db.execute(
                    "DELETE FROM queue_items WHERE seq IN (SELECT seq FROM queue_items WHERE queue_id=? AND "
                    "partition=? ORDER BY seq LIMIT ?) RETURNING seq, value", (key[0], key[1], n)).fetchall()
                if rows:
                    self._counts[key] = max(0, self._count(key) - len(rows))
                    _wake(self._space, key)
                    if self._counts[key]:
                        _wake(self._items, key)  # another waiter may take the rest
                    return [value for _, value in sorted(rows)]
                self._counts[key] = 0
            remaining = _remaining(deadline)
            if remaining == 0:
                return []
            await _wait(self._items, key, remaining, *stops)
            self._check_again(key)

    async def peek(self, conn: Connection, args: dict) -> dict:
        """Items after seq `after` without removing them: `items` [[seq, value]] (at most
        `limit`); when there are none, waits up to `timeout` seconds for one (`Queue.iterate`)."""
        key = self._key(args)
        after = int(args.get("after") or 0)
        limit = max(1, min(int(args.get("limit") or MAX_GET), MAX_GET))
        deadline = _deadline(args)
        closed = self._closed_event(conn)
        while True:
            items: list[list[Any]] = []
            size = 0
            for seq, value in self.db.execute(
                    "SELECT seq, value FROM queue_items WHERE queue_id=? AND partition=? AND seq>? ORDER BY seq "
                    "LIMIT ?", (key[0], key[1], after, limit)):
                items.append([seq, value])
                size += len(value)
                if size >= PEEK_BYTES:
                    break
            remaining = _remaining(deadline)
            if items or remaining == 0 or conn.closed:
                return {"items": items}
            await _wait(self._items, key, remaining, closed)
            self._check_again(key)

    async def len(self, conn: Connection, args: dict) -> int:
        if args.get("total"):
            if args.get("partition") is not None:
                raise InvalidError("Queue.len() takes partition= or total=True, not both.")
            row = self.objects.find(args)
            self._sweep(queue_id=row["id"])
            return self.db.execute("SELECT COUNT(*) FROM queue_items WHERE queue_id=?", (row["id"],)).fetchone()[0]
        return self._count(self._key(args))

    async def clear(self, conn: Connection, args: dict) -> dict:
        if args.get("all"):
            if args.get("partition") is not None:
                raise InvalidError("Queue.clear() takes partition= or all=True, not both.")
            row = self.objects.find(args)
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self._drop_items(row["id"])
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            return {}
        self._drop_partition(self._key(args))
        return {}


def _wake(signals: dict[Key, Signal], key: Key) -> None:
    signal = signals.get(key)
    if signal is not None:
        signal.set()


async def _wait(signals: dict[Key, Signal], key: Key, timeout: float | None, *stops: asyncio.Event) -> None:
    """Wait on `key`'s signal (made for the first waiter, dropped after the last)."""
    signal = signals.get(key)
    if signal is None:
        signal = signals[key] = Signal()
    try:
        await signal.wait(timeout, *stops)
    finally:
        if not signal.waiters and signals.get(key) is signal:
            del signals[key]


def _deadline(args: dict[str, Any]) -> float | None:
    """When a blocked request gives up (monotonic); None: never. `block: false` is now."""
    if args.get("block") is False:
        return time.monotonic()
    timeout = args.get("timeout")
    if timeout is None:
        return None
    if not isinstance(timeout, (int, float)) or timeout < 0:
        raise InvalidError(f"timeout must be a number of seconds of at least 0, got {timeout!r}.")
    return time.monotonic() + float(timeout)


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
