"""The `dict.*` requests of wire API v1 (docs/architecture.md, "Dicts and queues").

A dict's entries are rows of `dict_entries(dict_id, key, value, updated)`: keys and values are
the cloudpickle bytes the SDK sent, so two keys are the same key when they pickle the same
(as on the reference platform: use plain values as keys). Every write is one SQLite statement
(or one transaction for an update of many entries), durable once it is answered.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Awaitable, Callable

from .._named_objects import DICT_MAX_OBJECT_BYTES, DICT_MAX_UPDATE_ENTRIES, size_text
from ..exception import InvalidError
from .access import ADMIN_ONLY, EVERYONE, Role
from .connection import Connection
from .shapes import Shape, optional, required
from .named_objects import NamedObjectRequests, NamedObjects

Handler = Callable[[Connection, dict[str, Any]], Awaitable[Any]]
PAGE_ENTRIES = 1_000
PAGE_BYTES = 16 * 1024 * 1024


def check_entry(key: bytes, value: bytes | None = None) -> None:
    for what, data in (("key", key), ("value", value)):
        if data is not None and len(data) > DICT_MAX_OBJECT_BYTES:
            raise InvalidError(f"Dict {what} too large: {size_text(len(data))} pickled, over the limit of "
                               f"{size_text(DICT_MAX_OBJECT_BYTES)} per key or value. Store large data in a "
                               "Volume and put its path in the dict.")


class DictService(NamedObjectRequests):
    """Dicts: their rows (`NamedObjects`) and their entries."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.objects = NamedObjects(db, table="dicts", kind="Dict", prefix="di", drop_data=self._drop_entries)

    def _drop_entries(self, dict_id: str) -> None:
        self.db.execute("DELETE FROM dict_entries WHERE dict_id=?", (dict_id,))

    def handlers(self) -> dict[str, Handler]:
        return {f"dict.{name}": getattr(self, name) for name in (
            "get", "create", "drop_ephemeral", "list", "delete", "get_entry", "contains", "put", "pop", "len",
            "clear", "page")}

    @staticmethod
    def shapes() -> dict[str, Shape]:
        """The arguments each request reads (server/shapes.py); a dict is named by `name` or `id`."""
        ref = {"name": optional(str), "id": optional(str)}
        return {
            "dict.get": {**ref, "create_if_missing": optional(bool)},
            "dict.create": {"name": optional(str), "ephemeral": optional(bool), "allow_existing": optional(bool)},
            "dict.drop_ephemeral": {"id": required(str)},
            "dict.delete": {**ref, "allow_missing": optional(bool)},
            "dict.get_entry": {**ref, "key": required(bytes)},
            "dict.contains": {**ref, "key": required(bytes)},
            "dict.put": {**ref, "entries": optional(list, items=list), "skip_if_exists": optional(bool)},
            "dict.pop": {**ref, "key": required(bytes)},
            "dict.len": ref,
            "dict.clear": ref,
            "dict.page": {**ref, "after": optional(bytes), "keys_only": optional(bool), "limit": optional(int)},
        }

    @staticmethod
    def audiences() -> dict[str, frozenset[Role]]:
        """Containers read and write dicts (named, by id, ephemeral); listing and deleting named
        dicts is for administrators."""
        audiences = {f"dict.{name}": EVERYONE for name in (
            "get", "create", "drop_ephemeral", "get_entry", "contains", "put", "pop", "len", "clear", "page")}
        return {**audiences, "dict.list": ADMIN_ONLY, "dict.delete": ADMIN_ONLY}

    # -- dicts (get, create, drop_ephemeral and delete: NamedObjectRequests) ----------
    async def list(self, conn: Connection, args: dict) -> list[dict]:
        rows = self.objects.list()
        counts = dict(self.db.execute("SELECT dict_id, COUNT(*) FROM dict_entries GROUP BY dict_id").fetchall())
        return [{**row, "entries": counts.get(row["id"], 0)} for row in rows]

    # -- entries --------------------------------------------------------------------------
    async def get_entry(self, conn: Connection, args: dict) -> dict:
        row = self.objects.find(args)
        found = self.db.execute("SELECT value FROM dict_entries WHERE dict_id=? AND key=?",
                                (row["id"], bytes(args["key"]))).fetchone()
        return {"found": False} if found is None else {"found": True, "value": found[0]}

    async def contains(self, conn: Connection, args: dict) -> bool:
        row = self.objects.find(args)
        return self.db.execute("SELECT 1 FROM dict_entries WHERE dict_id=? AND key=?",
                               (row["id"], bytes(args["key"]))).fetchone() is not None

    async def put(self, conn: Connection, args: dict) -> dict:
        """Write `entries` ([[key, value]]); with `skip_if_exists`, keep existing keys.
        `written`: how many entries were written."""
        row = self.objects.find(args)
        raw = args.get("entries") or []
        if not all(len(e) == 2 and isinstance(e[0], bytes) and isinstance(e[1], bytes) for e in raw):
            raise InvalidError("dict.put: each entry must be [key, value], both pickled bytes.")
        entries = [(bytes(k), bytes(v)) for k, v in raw]
        if len(entries) > DICT_MAX_UPDATE_ENTRIES:
            raise InvalidError(f"Too many entries in one Dict update: {len(entries):,}, over the limit of "
                               f"{DICT_MAX_UPDATE_ENTRIES:,}; update in smaller batches.")
        for key, value in entries:
            check_entry(key, value)
        verb = "INSERT OR IGNORE" if args.get("skip_if_exists") else "INSERT OR REPLACE"
        now = time.time()
        rows = [(row["id"], k, v, now) for k, v in entries]
        if len(rows) == 1:
            written = self.db.execute(f"{verb} INTO dict_entries(dict_id, key, value, updated) VALUES (?, ?, ?, ?)",
                                      rows[0]).rowcount
        else:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                written = self.db.executemany(
                    f"{verb} INTO dict_entries(dict_id, key, value, updated) VALUES (?, ?, ?, ?)", rows).rowcount
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return {"written": max(written, 0)}

    async def pop(self, conn: Connection, args: dict) -> dict:
        row = self.objects.find(args)
        found = self.db.execute("DELETE FROM dict_entries WHERE dict_id=? AND key=? RETURNING value",
                                (row["id"], bytes(args["key"]))).fetchone()
        return {"found": False} if found is None else {"found": True, "value": found[0]}

    async def len(self, conn: Connection, args: dict) -> int:
        row = self.objects.find(args)
        return self.db.execute("SELECT COUNT(*) FROM dict_entries WHERE dict_id=?", (row["id"],)).fetchone()[0]

    async def clear(self, conn: Connection, args: dict) -> dict:
        row = self.objects.find(args)
        self._drop_entries(row["id"])
        return {}

    async def page(self, conn: Connection, args: dict) -> dict:
        """Entries in key order after key `after` (from the start without it): `items` [[key,
        value]] (keys only with `keys_only`), `next`: the key to continue after, or null."""
        row = self.objects.find(args)
        column = "key, NULL" if args.get("keys_only") else "key, value"
        if args.get("after") is None:
            cursor = self.db.execute(f"SELECT {column} FROM dict_entries WHERE dict_id=? ORDER BY key", (row["id"],))
        else:
            cursor = self.db.execute(f"SELECT {column} FROM dict_entries WHERE dict_id=? AND key>? ORDER BY key",
                                     (row["id"], bytes(args["after"])))
        items: list[list[Any]] = []
        size = 0
        for key, value in cursor:
            items.append([key, value])
            size += len(key) + (len(value) if value is not None else 0)
            if len(items) >= PAGE_ENTRIES or size >= PAGE_BYTES:
                cursor.close()
                return {"items": items, "next": key}
        return {"items": items, "next": None}
