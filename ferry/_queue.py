"""`Queue`: durable FIFO queues in the control plane, shared by every client and container.

    q = ferry.Queue.from_name("jobs", create_if_missing=True)
    q.put({"id": 1})
    q.put_many([2, 3], partition="urgent")
    job = q.get()                            # blocks until an item arrives (woken by the server)
    batch = q.get_many(10, timeout=1.0)      # up to 10 items; queue.Empty after 1 s without any

Items are any objects cloudpickle can pickle (1 MiB each, pickled). A queue has independent
FIFO partitions (a key of 1 to 64 bytes; the default partition has none), each of at most
5,000 items, emptied `partition_ttl` seconds (default 24 h) after its last put; a queue has at
most 100,000 partitions. A put is durable once it returns. Every method has an `.aio` form.
"""

from __future__ import annotations

import asyncio
import queue as queue_module
import secrets
from typing import Any, AsyncIterator

from ._named_objects import (
    QUEUE_DEFAULT_PARTITION_TTL, QUEUE_MAX_ITEM_BYTES, QUEUE_MAX_PARTITION_ITEMS, QUEUE_MAX_PARTITION_KEY_BYTES,
    Ephemeral, NamedObject, ObjectManager, QueueInfo, classproperty, deprecated_delete, size_text,
)
from ._serialization import deserialize, serialize
from ._sync import synced
from .exception import InvalidError

_GET_MANY_MAX = 1_000


def _pack(item: Any) -> bytes:
    data = serialize(item, what="Queue item")
    if len(data) > QUEUE_MAX_ITEM_BYTES:
        raise InvalidError(f"Queue item too large: {size_text(len(data))} pickled, over the limit of "
                           f"{size_text(QUEUE_MAX_ITEM_BYTES)} per item. Store large data in a Volume or a Dict "
                           "and put a reference in the queue.")
    return data


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0):
        raise InvalidError(f"timeout must be None or a number of seconds of at least 0, got {timeout!r}.")


class Queue(NamedObject):
    """A named (`Queue.from_name`) or ephemeral (`Queue.ephemeral()`) distributed FIFO queue."""

    _kind = "Queue"
    _wire = "queue"
    _prefix = "qu"

    # -- constructors ---------------------------------------------------------------------
    @staticmethod
    def from_name(name: str, *, environment_name: str | None = None, create_if_missing: bool = False,
                  client: Any = None) -> "Queue":
        """The queue stored under `name` (created on first use with `create_if_missing`)."""
        return Queue._from_name(name, environment_name, create_if_missing, client)

    @staticmethod
    def from_id(queue_id: str, client: Any = None) -> "Queue":
        """The queue with this `object_id` (e.g. an ephemeral queue passed to a function)."""
        return Queue._from_id(queue_id, client)

    @classmethod
    def ephemeral(cls, client: Any = None, environment_name: str | None = None,
                  _heartbeat_sleep: float = 300) -> Ephemeral["Queue"]:
        """A queue for a `with` (or `async with`) block, deleted when the block ends or this
        process's connection closes. (`_heartbeat_sleep` has no use here: the server ties the
        queue to the connection.)"""
        return Ephemeral(cls, client, environment_name)

    @classproperty
    def objects(cls) -> ObjectManager["Queue"]:
        """Manage named queues: `Queue.objects.create(name)`, `.list()`, `.delete(name)`."""
        return ObjectManager(cls)

    @staticmethod
    def delete(name: str, *, allow_missing: bool = False, environment_name: str | None = None,
               client: Any = None) -> None:
        """Deprecated spelling of `Queue.objects.delete(name)`."""
        deprecated_delete(Queue, name, allow_missing=allow_missing, environment_name=environment_name,
                          client=client)

    @staticmethod
    def validate_partition_key(partition: str | None) -> bytes:
        """The partition key as bytes (b"" for the default partition), or InvalidError."""
        if partition is None:
            return b""
        if not isinstance(partition, str):
            raise InvalidError(f"A queue partition key is a string, got {type(partition).__name__}.")
        data = partition.encode()
        if not 1 <= len(data) <= QUEUE_MAX_PARTITION_KEY_BYTES:
            raise InvalidError(f"Queue partition key {partition!r} is {len(data)} bytes; partition keys must be 1 "
                               f"to {QUEUE_MAX_PARTITION_KEY_BYTES} bytes (UTF-8).")
        return data

    async def _call_waiting(self, method: str, **args: Any) -> Any:
        """A request that may wait on the server; if this call is cancelled (a `.aio` task, or
        Ctrl-C), the server is told to withdraw it, so it takes or puts nothing later."""
        client = await self._connect()
        row = await self._row(client)
        waiter = secrets.token_hex(8)
        try:
            return await client.request(f"queue.{method}", id=row["id"], waiter=waiter, **args)
        except asyncio.CancelledError:
            if client.connected:  # before anything the caller does next (a put it would take)
                client.notify("queue.withdraw", waiter=waiter)
            raise

    # -- putting --------------------------------------------------------------------------
    async def _put_many(self, vs: list[Any], block: bool = True, timeout: float | None = None, *,
                        partition: str | None = None, partition_ttl: int = QUEUE_DEFAULT_PARTITION_TTL) -> None:
        Queue.validate_partition_key(partition)
        _check_timeout(timeout)
        if isinstance(partition_ttl, bool) or not isinstance(partition_ttl, int) or partition_ttl < 1:
            raise InvalidError(f"partition_ttl must be a whole number of seconds of at least 1, got "
                               f"{partition_ttl!r}.")
        values = [_pack(v) for v in vs]
        if len(values) > QUEUE_MAX_PARTITION_ITEMS:
            raise InvalidError(f"Cannot put {len(values):,} items at once: a queue partition holds at most "
                               f"{QUEUE_MAX_PARTITION_ITEMS:,} items.")
        result = await self._call_waiting("put", values=values, block=bool(block), timeout=timeout,
                                          partition=partition, partition_ttl=partition_ttl)
        if result["full"]:
            raise queue_module.Full(
                f"Queue partition is full ({QUEUE_MAX_PARTITION_ITEMS:,} items at most): nothing was put. Get "
                "items from it, or put with block=True and a longer timeout.")

    async def _put(self, v: Any, block: bool = True, timeout: float | None = None, *, partition: str | None = None,
                   partition_ttl: int = QUEUE_DEFAULT_PARTITION_TTL) -> None:
        await self._put_many([v], block, timeout, partition=partition, partition_ttl=partition_ttl)

    put = synced(_put)
    put.__doc__ = """Add `v` to the end of the queue (of `partition`). If the partition is full, wait
    (`block`, up to `timeout` seconds) for room, then raise `queue.Full`."""
    put_many = synced(_put_many)
    put_many.__doc__ = """Add every item of `vs`, in order, all or none (as `put`)."""

    # -- getting --------------------------------------------------------------------------
    async def _take(self, n: int, block: bool, timeout: float | None, partition: str | None) -> list[Any]:
        Queue.validate_partition_key(partition)
        _check_timeout(timeout)
        values = await self._call_waiting("take", n=n, block=bool(block), timeout=timeout, partition=partition)
        return [deserialize(v, what="Queue item") for v in values]

    async def _get(self, block: bool = True, timeout: float | None = None, *,
                   partition: str | None = None) -> Any | None:
        items = await self._take(1, block, timeout, partition)
        if items:
            return items[0]
        if block:
            raise queue_module.Empty(f"No item arrived in the queue within {timeout} s.")
        return None

    async def _get_many(self, n_values: int, block: bool = True, timeout: float | None = None, *,
                        partition: str | None = None) -> list[Any]:
        if isinstance(n_values, bool) or not isinstance(n_values, int) or not 1 <= n_values <= _GET_MANY_MAX:
            raise InvalidError(f"get_many(n_values=...) takes 1 to {_GET_MANY_MAX:,} items at a time, "
                               f"got {n_values!r}.")
        items = await self._take(n_values, block, timeout, partition)
        if not items and block:
            raise queue_module.Empty(f"No item arrived in the queue within {timeout} s.")
        return items

    async def _iterate(self, *, partition: str | None = None, item_poll_timeout: float = 0.0) -> AsyncIterator[Any]:
        Queue.validate_partition_key(partition)
        _check_timeout(item_poll_timeout)
        after = 0
        while True:
            page = await self._call("peek", partition=partition, after=after, timeout=item_poll_timeout)
            if not page["items"]:
                return
            for seq, value in page["items"]:
                yield deserialize(value, what="Queue item")
                after = seq

    get = synced(_get)
    get.__doc__ = """Remove and return the oldest item. With `block` (the default), wait for one up to
    `timeout` seconds (forever if None), then raise `queue.Empty`; without, return None at once
    if the queue is empty."""
    get_many = synced(_get_many)
    get_many.__doc__ = """Remove and return up to `n_values` items, oldest first; waits for at least one
    as `get` does (`queue.Empty` after `timeout`), or returns [] at once without `block`."""
    iterate = synced(_iterate)
    iterate.__doc__ = """Iterate over the items without removing them; at the end, wait up to
    `item_poll_timeout` seconds for another item before stopping."""

    # -- the rest -------------------------------------------------------------------------
    async def _len(self, *, partition: str | None = None, total: bool = False) -> int:
        if partition is not None and total:
            raise InvalidError("Queue.len() takes partition= or total=True, not both.")
        Queue.validate_partition_key(partition)
        return await self._call("len", partition=partition, total=bool(total))

    async def _clear(self, *, partition: str | None = None, all: bool = False) -> None:
        if partition is not None and all:
            raise InvalidError("Queue.clear() takes partition= or all=True, not both.")
        Queue.validate_partition_key(partition)
        await self._call("clear", partition=partition, all=bool(all))

    async def _info(self) -> QueueInfo:
        return QueueInfo(**await self._info_row())

    len = synced(_len)
    len.__doc__ = """The number of items in `partition` (the default one), or in all (`total=True`)."""
    clear = synced(_clear)
    clear.__doc__ = """Remove every item of `partition` (the default one), or of all (`all=True`)."""
    info = synced(_info)
    info.__doc__ = """The queue's name and creation date (`QueueInfo`)."""
