"""What `Dict` and `Queue` share: names and ids, ephemeral blocks, the `.objects` manager,
`info()` records, and the platform's size limits.

A `Dict`/`Queue` object is a reference: `from_name` stores the name and resolves it to an id
on first use (`<kind>.get`, creating it when `create_if_missing`), per server; `from_id` and
`ephemeral()` carry the id. References pickle (they can be passed to functions, or stored in
a dict or a queue) and are resolved again where they land.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ._client import Client
from ._sync import run_async, run_sync, synced
from .exception import InvalidError, deprecation_warning

# The reference platform's documented limits, enforced the same way here.
DICT_MAX_OBJECT_BYTES = 100 * 1024 * 1024      # a pickled key or value
DICT_MAX_UPDATE_ENTRIES = 10_000               # entries of one update()
QUEUE_MAX_ITEM_BYTES = 1024 * 1024             # one pickled item
QUEUE_MAX_PARTITION_ITEMS = 5_000              # items in one partition
QUEUE_MAX_PARTITIONS = 100_000                 # partitions of one queue
QUEUE_MAX_PARTITION_KEY_BYTES = 64             # a partition key, UTF-8
QUEUE_DEFAULT_PARTITION_TTL = 24 * 3600        # seconds after a partition's last put

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def check_object_name(name: Any, kind: str) -> str:
    """A valid Dict or Queue name, or InvalidError saying what a name may contain."""
    if not isinstance(name, str) or not 1 <= len(name) <= 64 or not name[0].isalnum() \
            or not set(name) <= _NAME_CHARS:
        raise InvalidError(f"Invalid {kind} name {name!r}: use 1 to 64 letters, digits, '.', '-' or '_', "
                           "starting with a letter or digit.")
    return name


def size_text(size: int) -> str:
    return f"{size / (1024 * 1024):.0f} MiB" if size >= 1024 * 1024 else f"{size:,} bytes"


def _no_environment(kind: str, method: str, environment_name: str | None) -> None:
    if environment_name is not None:
        raise NotImplementedError(f"{kind}.{method}(environment_name=...) is not supported by Ferry (it has no "
                                  "environments); remove environment_name=.")


def _client_of(client: Any) -> Client | None:
    if client is not None and not isinstance(client, Client):
        raise InvalidError(f"client= takes a ferry Client, got {type(client).__name__}.")
    return client


@dataclass(frozen=True)
class DictInfo:
    """What `Dict.info()` returns."""

    name: str | None
    created_at: datetime.datetime
    created_by: str | None


@dataclass(frozen=True)
class QueueInfo:
    """What `Queue.info()` returns."""

    name: str | None
    created_at: datetime.datetime
    created_by: str | None


class NamedObject:
    """Base of `Dict` and `Queue`: a reference resolved per server on first use."""

    _kind = ""    # "Dict" / "Queue"
    _wire = ""    # request prefix: "dict" / "queue"
    _prefix = ""  # id prefix: "di" / "qu"

    def __init__(self, name: str | None = None, *, create_if_missing: bool = False, object_id: str | None = None,
                 client: Client | None = None, _ephemeral: bool = False) -> None:
        if name is None and object_id is None:
            raise InvalidError(f"Create a {self._kind} with {self._kind}.from_name(name), {self._kind}.from_id(id) "
                               f"or {self._kind}.ephemeral().")
        self._name = name
        self._create_if_missing = create_if_missing
        self._object_id = object_id
        self._client = client
        self._ephemeral = _ephemeral
        self._rows: dict[str, dict[str, Any]] = {}  # server url -> the `<kind>.get` answer

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_rows": {}, "_client": None}

    def __repr__(self) -> str:
        if self._object_id is not None and (self._name is None or self._ephemeral):
            return f"{self._kind}.from_id({self._object_id!r})"
        return f"{self._kind}.from_name({self._name!r})"

    # -- constructors ---------------------------------------------------------------------
    @classmethod
    def _from_name(cls, name: str, environment_name: str | None, create_if_missing: bool, client: Any) -> Any:
        _no_environment(cls._kind, "from_name", environment_name)
        return cls(check_object_name(name, cls._kind), create_if_missing=create_if_missing,
                   client=_client_of(client))

    @classmethod
    def _from_id(cls, object_id: str, client: Any) -> Any:
        if not isinstance(object_id, str) or not object_id.startswith(cls._prefix + "-"):
            raise InvalidError(f"{object_id!r} is not a {cls._kind} id (they look like '{cls._prefix}-...').")
        return cls(object_id=object_id, client=_client_of(client))

    # -- identity -------------------------------------------------------------------------
    async def _connect(self) -> Client:
        if self._client is not None:
            await self._client.connect()
            return self._client
        return await Client.from_env()

    async def _row(self, client: Client) -> dict[str, Any]:
        row = self._rows.get(client.url)
        if row is None:
            if self._object_id is not None:
                row = await client.request(f"{self._wire}.get", id=self._object_id)
            else:
                row = await client.request(f"{self._wire}.get", name=self._name,
                                           create_if_missing=self._create_if_missing)
            self._rows[client.url] = row
        return row

    async def _call(self, method: str, **args: Any) -> Any:
        """Send `<kind>.<method>` for this object."""
        client = await self._connect()
        row = await self._row(client)
        return await client.request(f"{self._wire}.{method}", id=row["id"], **args)

    async def _hydrate(self, client: Any = None) -> Any:
        if client is not None:
            self._client = _client_of(client)
        await self._row(await self._connect())
        return self

    hydrate = synced(_hydrate)

    @property
    def object_id(self) -> str:
        if self._object_id is not None:
            return self._object_id
        return run_sync(self._resolved())["id"]

    @property
    def name(self) -> str | None:
        """The name given to `from_name` (None for ephemeral objects and `from_id`)."""
        return None if self._ephemeral else self._name

    @property
    def client(self) -> Client:
        return self._client if self._client is not None else Client.from_env_sync()

    async def _resolved(self) -> dict[str, Any]:
        return await self._row(await self._connect())

    async def _info_row(self) -> dict[str, Any]:
        row = await self._resolved()
        return {"name": None if row["ephemeral"] else row["name"],
                "created_at": datetime.datetime.fromtimestamp(row["created"], tz=datetime.timezone.utc),
                "created_by": None}

    async def _get_dashboard_url(self) -> str:
        raise NotImplementedError(f"{self._kind}.get_dashboard_url() is not supported by Ferry: the dashboard has "
                                  f"no {self._kind} pages yet; use `ferry {self._wire} list`.")

    get_dashboard_url = synced(_get_dashboard_url)


O = TypeVar("O", bound=NamedObject)


class Ephemeral(Generic[O]):
    """`<Kind>.ephemeral()`: created on entry (tied to this process's connection, so also
    deleted if the process dies), deleted on exit. A `with` or `async with` block."""

    def __init__(self, cls: type[O], client: Any, environment_name: str | None) -> None:
        _no_environment(cls._kind, "ephemeral", environment_name)
        self._cls = cls
        self._client = _client_of(client)
        self._object: O | None = None

    async def _create(self) -> O:
        client = self._client if self._client is not None else await Client.from_env()
        row = await client.request(f"{self._cls._wire}.create", ephemeral=True)
        obj = self._cls(row["name"], object_id=row["id"], client=self._client, _ephemeral=True)
        obj._rows[client.url] = row
        self._object = obj
        return obj

    async def _drop(self) -> None:
        if self._object is not None:
            client = self._client if self._client is not None else await Client.from_env()
            await client.request(f"{self._cls._wire}.drop_ephemeral", id=self._object._object_id)

    def __enter__(self) -> O:
        return run_sync(self._create())

    def __exit__(self, *_: Any) -> None:
        run_sync(self._drop())

    async def __aenter__(self) -> O:
        return await run_async(self._create())

    async def __aexit__(self, *_: Any) -> None:
        await run_async(self._drop())


class ObjectManager(Generic[O]):
    """`Dict.objects` / `Queue.objects`: create, list and delete named objects."""

    def __init__(self, cls: type[O]) -> None:
        self._cls = cls

    async def _create(self, name: str, *, allow_existing: bool = False, environment_name: str | None = None,
                      client: Any = None) -> None:
        _no_environment(self._cls._kind, "objects.create", environment_name)
        connected = _client_of(client) or await Client.from_env()
        await connected.request(f"{self._cls._wire}.create", name=check_object_name(name, self._cls._kind),
                                allow_existing=allow_existing)

    async def _list(self, *, max_objects: int | None = None, created_before: Any = None,
                    environment_name: str | None = None, client: Any = None) -> list[O]:
        _no_environment(self._cls._kind, "objects.list", environment_name)
        connected = _client_of(client) or await Client.from_env()
        rows = await connected.request(f"{self._cls._wire}.list")
        if created_before is not None:
            if isinstance(created_before, str):
                created_before = datetime.datetime.fromisoformat(created_before)
            if not isinstance(created_before, datetime.datetime):
                raise InvalidError("created_before= takes a datetime or an ISO 8601 string.")
            if created_before.tzinfo is None:
                created_before = created_before.astimezone()
            limit = created_before.timestamp()
            rows = [r for r in rows if r["created"] < limit]
        if max_objects is not None:
            if max_objects < 0:
                raise InvalidError("max_objects= must be 0 or more.")
            rows = rows[:max_objects]
        objects = []
        for row in rows:
            obj = self._cls(row["name"], object_id=row["id"], client=_client_of(client))
            obj._rows[connected.url] = row
            objects.append(obj)
        return objects

    async def _delete(self, name: str, *, allow_missing: bool = False, environment_name: str | None = None,
                      client: Any = None) -> None:
        _no_environment(self._cls._kind, "objects.delete", environment_name)
        connected = _client_of(client) or await Client.from_env()
        await connected.request(f"{self._cls._wire}.delete", name=check_object_name(name, self._cls._kind),
                                allow_missing=allow_missing)

    create = synced(_create)
    list = synced(_list)
    delete = synced(_delete)


class classproperty:
    """A read-only property of the class (`Dict.objects`)."""

    def __init__(self, fn: Any) -> None:
        self._fn = fn
        self.__doc__ = fn.__doc__

    def __get__(self, obj: Any, owner: type) -> Any:
        return self._fn(owner)


def deprecated_delete(cls: type[NamedObject], name: str, *, allow_missing: bool = False,
                      environment_name: str | None = None, client: Any = None) -> None:
    deprecation_warning(f"{cls._kind}.delete(name) is deprecated: use {cls._kind}.objects.delete(name).",
                        stacklevel=4)
    ObjectManager(cls).delete(name, allow_missing=allow_missing, environment_name=environment_name, client=client)
