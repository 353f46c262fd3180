"""Named objects of the control plane that hold data in SQLite: dicts and queues.

Both live in `state.db`, in tables of their own, through a connection of their own (opened by
`open_database`, WAL like the main store, `synchronous=NORMAL`: a write is durable against a
crash of the server process once its statement returns, and no write waits for an fsync):

    dicts(id, name, ephemeral, created)      dict_entries(dict_id, key, value, updated)
    queues(id, name, ephemeral, created)     queue_partitions(queue_id, partition, expires)
                                             queue_items(seq, queue_id, partition, value)

`NamedObjects` manages the rows of `dicts` or `queues`: names, ids, ephemeral objects (deleted
when the connection that made them closes, and at server start, since a restart ended every
connection). `NamedObjectRequests` answers the requests both kinds answer alike (`get`,
`create`, `drop_ephemeral`, `delete`). The data of each kind is handled by server/dicts.py and
server/queues.py.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable

from .._named_objects import check_object_name
from ..exception import InvalidError, NotFoundError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dicts (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, ephemeral INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS dict_entries (
    dict_id TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (dict_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queues (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, ephemeral INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS queue_partitions (
    queue_id TEXT NOT NULL, partition TEXT NOT NULL, expires REAL NOT NULL, PRIMARY KEY (queue_id, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queue_items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, queue_id TEXT NOT NULL, partition TEXT NOT NULL, value BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_items_by_partition ON queue_items(queue_id, partition, seq);
"""

EPHEMERAL_PREFIX = "ephemeral-"
_COLUMNS = ("id", "name", "ephemeral", "created")


def open_database(path: Path) -> sqlite3.Connection:
    """A connection to `state.db` with the dict and queue tables (created if missing)."""
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_SCHEMA)
    return db


class NamedObjects:
    """The rows of one kind's table (`dicts` or `queues`); `kind` is "Dict" or "Queue"."""

    def __init__(self, db: sqlite3.Connection, *, table: str, kind: str, prefix: str,
                 drop_data: Callable[[str], None]) -> None:
        self.db = db
        self.table = table
        self.kind = kind
        self.prefix = prefix
        self._drop_data = drop_data
        for (object_id,) in db.execute(f"SELECT id FROM {table} WHERE ephemeral=1").fetchall():
            self.delete_by_id(object_id)  # they belonged to connections of a previous server run

    def _row(self, row: tuple | None) -> dict[str, Any] | None:
        return dict(zip(_COLUMNS, (row[0], row[1], bool(row[2]), row[3]))) if row else None

    def create(self, name: str | None, *, ephemeral: bool = False, allow_existing: bool = False) -> dict[str, Any]:
        if ephemeral:
            name = EPHEMERAL_PREFIX + secrets.token_hex(8)
        else:
            name = check_object_name(name, self.kind)
            existing = self.by_name(name)
            if existing is not None:
                if allow_existing:
                    return existing
                raise InvalidError(f"{self.kind} {name!r} already exists. See `ferry {self.kind.lower()} list`.")
        object_id = f"{self.prefix}-{secrets.token_hex(8)}"
        created = time.time()
        self.db.execute(f"INSERT INTO {self.table}(id, name, ephemeral, created) VALUES (?, ?, ?, ?)",
                        (object_id, name, int(ephemeral), created))
        return {"id": object_id, "name": name, "ephemeral": ephemeral, "created": created}

    def by_name(self, name: str) -> dict[str, Any] | None:
        return self._row(self.db.execute(f"SELECT id, name, ephemeral, created FROM {self.table} WHERE name=?",
                                         (name,)).fetchone())

    def get(self, name: str, *, create_if_missing: bool = False) -> dict[str, Any]:
        row = self.by_name(check_object_name(name, self.kind))
        if row is None and create_if_missing:
            return self.create(name)
        if row is None:
            lower = self.kind.lower()
            raise NotFoundError(f"{self.kind} {name!r} not found. Create it with `ferry {lower} create {name}`, or "
                                f"use {self.kind}.from_name({name!r}, create_if_missing=True).")
        return row

    def find(self, args: dict[str, Any]) -> dict[str, Any]:
        """The object named by a request's `id` (or `name`)."""
        if not args.get("id"):
            return self.get(args.get("name"))
        row = self._row(self.db.execute(f"SELECT id, name, ephemeral, created FROM {self.table} WHERE id=?",
                                        (args["id"],)).fetchone())
        if row is None:
            raise NotFoundError(f"{self.kind} {args['id']!r} no longer exists (was it deleted?).")
        return row

    def list(self) -> list[dict[str, Any]]:
        rows = self.db.execute(f"SELECT id, name, ephemeral, created FROM {self.table} WHERE ephemeral=0 "
                               "ORDER BY name").fetchall()
        return [self._row(r) for r in rows]  # type: ignore[misc]

    def delete_by_id(self, object_id: str) -> None:
        """The object and its data, in one transaction."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self._drop_data(object_id)
            self.db.execute(f"DELETE FROM {self.table} WHERE id=?", (object_id,))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise


def services(path: Path) -> list[Any]:
    """The `dict.*` and `queue.*` services (server/dicts.py, server/queues.py), sharing one
    connection to `state.db`."""
    from .dicts import DictService
    from .queues import QueueService

    db = open_database(path)
    return [DictService(db), QueueService(db)]


class NamedObjectRequests:
    """The `<kind>.get`, `.create`, `.drop_ephemeral` and `.delete` requests, the same for every
    kind of named object: a service mixes them in and sets `objects`."""

    objects: NamedObjects

    async def get(self, conn: Any, args: dict) -> dict:
        if args.get("id"):
            return self.objects.find(args)
        return self.objects.get(args.get("name"), create_if_missing=bool(args.get("create_if_missing")))

    async def create(self, conn: Any, args: dict) -> dict:
        ephemeral = bool(args.get("ephemeral"))
        row = self.objects.create(args.get("name"), ephemeral=ephemeral,
                                  allow_existing=bool(args.get("allow_existing")))
        if ephemeral:  # it lives as long as the connection that made it
            conn.on_close.append(lambda: self.objects.delete_by_id(row["id"]))
        return row

    async def drop_ephemeral(self, conn: Any, args: dict) -> dict:
        """Delete an ephemeral object (already gone, e.g. after a server restart: nothing to do)."""
        try:
            row = self.objects.find({"id": args.get("id")})
        except NotFoundError:
            return {}
        if not row["ephemeral"]:
            kind = self.objects.kind
            raise InvalidError(f"{kind} {row['name']!r} is not ephemeral; delete it with "
                               f"`ferry {kind.lower()} delete`.")
        self.objects.delete_by_id(row["id"])
        return {}

    async def delete(self, conn: Any, args: dict) -> dict:
        if args.get("allow_missing") and not args.get("id") and self.objects.by_name(args.get("name", "")) is None:
            return {"name": args.get("name"), "deleted": False}
        row = self.objects.find(args)
        self.objects.delete_by_id(row["id"])
        return {"name": row["name"], "deleted": True}
