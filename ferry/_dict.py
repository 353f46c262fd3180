"""`Dict`: a durable key-value store in the control plane, shared by every client and container.

    d = ferry.Dict.from_name("cache", create_if_missing=True)
    d["answer"] = 42
    d.put("answer", 0, skip_if_exists=True)   # False: it is there already
    assert d["answer"] == 42 and "answer" in d

Keys and values are any objects cloudpickle can pickle (at most 100 MiB each, pickled); two
keys are the same key when they pickle to the same bytes, so prefer plain values as keys. A
write is durable once it returns. Every method has an `.aio` form (`await d.get.aio(k)`);
`d[k]`, `d[k] = v`, `del d[k]` and `k in d` are blocking only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, AsyncIterator

from ._named_objects import (
    DICT_MAX_OBJECT_BYTES, DICT_MAX_UPDATE_ENTRIES, DictInfo, Ephemeral, NamedObject, ObjectManager, classproperty,
    deprecated_delete, size_text,
)
from ._serialization import deserialize, serialize
from ._sync import synced
from .exception import InvalidError

_MISSING: Any = object()


def _pack(obj: Any, what: str) -> bytes:
    data = serialize(obj, what=f"Dict {what}")
    if len(data) > DICT_MAX_OBJECT_BYTES:
        raise InvalidError(f"Dict {what} too large: {size_text(len(data))} pickled, over the limit of "
                           f"{size_text(DICT_MAX_OBJECT_BYTES)} per key or value. Store large data in a Volume "
                           "and put its path in the dict.")
    return data


class Dict(NamedObject):
    """A named (`Dict.from_name`) or ephemeral (`Dict.ephemeral()`) distributed dict."""

    _kind = "Dict"
    _wire = "dict"
    _prefix = "di"

    # -- constructors ---------------------------------------------------------------------
    @staticmethod
    def from_name(name: str, *, environment_name: str | None = None, create_if_missing: bool = False,
                  client: Any = None) -> "Dict":
        """The dict stored under `name` (created on first use with `create_if_missing`)."""
        return Dict._from_name(name, environment_name, create_if_missing, client)

    @staticmethod
    def from_id(dict_id: str, client: Any = None) -> "Dict":
        """The dict with this `object_id` (e.g. an ephemeral dict passed to a function)."""
        return Dict._from_id(dict_id, client)

    @classmethod
    def ephemeral(cls, *, client: Any = None, environment_name: str | None = None,
                  _heartbeat_sleep: float = 300) -> Ephemeral["Dict"]:
        """A dict for a `with` (or `async with`) block, deleted when the block ends or this
        process's connection closes. (`_heartbeat_sleep` has no use here: the server ties the
        dict to the connection.)"""
        return Ephemeral(cls, client, environment_name)

    @classproperty
    def objects(cls) -> ObjectManager["Dict"]:
        """Manage named dicts: `Dict.objects.create(name)`, `.list()`, `.delete(name)`."""
        return ObjectManager(cls)

    @staticmethod
    def delete(name: str, *, allow_missing: bool = False, environment_name: str | None = None,
               client: Any = None) -> None:
        """Deprecated spelling of `Dict.objects.delete(name)`."""
        deprecated_delete(Dict, name, allow_missing=allow_missing, environment_name=environment_name, client=client)

    # -- reading --------------------------------------------------------------------------
    async def _get(self, key: Any, default: Any = None) -> Any:
        found = await self._call("get_entry", key=_pack(key, "key"))
        return deserialize(found["value"], what="Dict value") if found["found"] else default

    async def _contains(self, key: Any) -> bool:
        return await self._call("contains", key=_pack(key, "key"))

    async def _len(self) -> int:
        return await self._call("len")

    async def _entries(self, keys_only: bool) -> AsyncIterator[tuple[Any, Any]]:
        after = None
        while True:
            page = await self._call("page", after=after, keys_only=keys_only)
            for key, value in page["items"]:
                yield (deserialize(key, what="Dict key"),
                       None if keys_only else deserialize(value, what="Dict value"))
            if page["next"] is None:
                return
            after = page["next"]

    async def _keys(self) -> AsyncIterator[Any]:
        async for key, _ in self._entries(True):
            yield key

    async def _values(self) -> AsyncIterator[Any]:
        async for _, value in self._entries(False):
            yield value

    async def _items(self) -> AsyncIterator[tuple[Any, Any]]:
        async for item in self._entries(False):
            yield item

    async def _info(self) -> DictInfo:
        return DictInfo(**await self._info_row())

    get = synced(_get)
    get.__doc__ = """The value of `key`, or `default` if the dict has no such key."""
    contains = synced(_contains)
    contains.__doc__ = """Whether the dict has `key`."""
    len = synced(_len)
    len.__doc__ = """The number of entries."""
    keys = synced(_keys)
    keys.__doc__ = """An iterator over the keys (in no particular order)."""
    values = synced(_values)
    values.__doc__ = """An iterator over the values (in no particular order)."""
    items = synced(_items)
    items.__doc__ = """An iterator over (key, value) pairs (in no particular order)."""
    info = synced(_info)
    info.__doc__ = """The dict's name and creation date (`DictInfo`)."""

    # -- writing --------------------------------------------------------------------------
    async def _put(self, key: Any, value: Any, *, skip_if_exists: bool = False) -> bool:
        result = await self._call("put", entries=[[_pack(key, "key"), _pack(value, "value")]],
                                  skip_if_exists=bool(skip_if_exists))
        return result["written"] > 0

    async def _update(self, other: Mapping[Any, Any] | None = None, /, **kwargs: Any) -> None:
        entries: dict[Any, Any] = {}
        if other is not None:
            if not isinstance(other, Mapping) and not hasattr(other, "keys"):
                entries.update(dict(other))  # an iterable of pairs, as dict.update takes
            else:
                entries.update(other)
        entries.update(kwargs)
        if len(entries) > DICT_MAX_UPDATE_ENTRIES:
            raise InvalidError(f"Too many entries in one Dict update: {len(entries):,}, over the limit of "
                               f"{DICT_MAX_UPDATE_ENTRIES:,}; update in smaller batches.")
        if entries:
            await self._call("put", entries=[[_pack(k, "key"), _pack(v, "value")] for k, v in entries.items()])

    async def _pop(self, key: Any, default: Any = _MISSING) -> Any:
        found = await self._call("pop", key=_pack(key, "key"))
        if found["found"]:
            return deserialize(found["value"], what="Dict value")
        if default is _MISSING:
            raise KeyError(key)
        return default

    async def _clear(self) -> None:
        await self._call("clear")

    put = synced(_put)
    put.__doc__ = """Set `key` to `value`; with `skip_if_exists`, only if the key is absent. Returns
    whether the value was written."""
    update = synced(_update)
    update.__doc__ = """Set several keys at once (a mapping and/or keyword arguments; at most 10,000)."""
    pop = synced(_pop)
    pop.__doc__ = """Remove `key` and return its value (`default`, or KeyError, if absent)."""
    clear = synced(_clear)
    clear.__doc__ = """Remove every entry."""

    # -- the dict protocol (blocking) -----------------------------------------------------
    def __getitem__(self, key: Any) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        self.put(key, value)

    def __delitem__(self, key: Any) -> None:
        self.pop(key)

    def __contains__(self, key: Any) -> bool:
        return self.contains(key)
