"""Volumes: persistent files shared between containers and runs.

    vol = ferry.Volume.from_name("model-cache", create_if_missing=True)

    @app.function(volumes={"/models": vol})
    def f():
        Path("/models/w.bin").write_bytes(...)
        vol.commit()          # now other containers can see it (after their reload())

A container sees the volume as of its start (or its last `reload()`); its writes reach the
volume when it commits (and automatically when it exits cleanly). `listdir`, `read_file`,
`batch_upload`, `remove_file`, `copy_files` work from anywhere, on the committed files.
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import os
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, AsyncIterator, BinaryIO, Iterable

from ._client import Client
from ._named_objects import _client_of
from ._sync import run_sync, synced
from ._volume_files import VERSIONS, check_volume_name, clean_path
from ._volume_upload import Source, directory_sources, file_source, upload
from .exception import InvalidError

_RESERVED = ("/proc", "/dev", "/sys", "/opt/ferry", "/var/lib/ferry")
_TOP_LEVEL = {"/", "/bin", "/boot", "/etc", "/lib", "/lib64", "/root", "/sbin", "/tmp", "/usr", "/var"}


class FileEntryType(enum.IntEnum):
    UNSPECIFIED = 0
    FILE = 1
    DIRECTORY = 2
    SYMLINK = 3


_ENTRY_TYPES = {"file": FileEntryType.FILE, "directory": FileEntryType.DIRECTORY, "symlink": FileEntryType.SYMLINK}


@dataclass(frozen=True)
class FileEntry:
    """A file, directory or link of a volume: `path` from the volume's root, without '/'."""

    path: str
    type: FileEntryType
    mtime: int
    size: int

    @classmethod
    def _from_wire(cls, row: dict[str, Any]) -> "FileEntry":
        return cls(row["path"], _ENTRY_TYPES[row["type"]], int(row["mtime"]), int(row["size"]))


class Volume:
    """A named, persistent volume (`Volume.from_name`), or an ephemeral one (`Volume.ephemeral()`)."""

    def __init__(self, name: str | None, *, create_if_missing: bool = False, version: int | None = None,
                 volume_id: str | None = None, read_only: bool = False, client: Client | None = None) -> None:
        if version not in (None, *VERSIONS):
            raise InvalidError(f"Volume version must be 1 or 2, got {version!r}.")
        self._client = _client_of(client)  # None: the configured server (Client.from_env)
        self.name = name
        self.create_if_missing = create_if_missing
        self.version = version
        self._volume_id = volume_id
        self._read_only = read_only
        self._ids: dict[str, dict[str, Any]] = {}  # server url -> volume.get answer

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_ids": {}, "_client": None}

    @property
    def client(self) -> Client:
        """The client this volume talks to the server with (`client=`, else the configured server's)."""
        return self._client if self._client is not None else Client.from_env_sync()

    async def _connect(self) -> Client:
        if self._client is not None:
            await self._client.connect()
            return self._client
        return await Client.from_env()

    def __repr__(self) -> str:
        text = f"Volume.from_name({self.name!r})" if self._volume_id is None else f"Volume.from_id({self._volume_id!r})"
        return text + (".read_only()" if self._read_only else "")

    # -- constructors ---------------------------------------------------------------------
    @staticmethod
    def from_name(name: str, *, environment_name: str | None = None, create_if_missing: bool = False,
                  version: int | None = None, client: Any = None) -> "Volume":
        """A volume stored on the server under `name`; with `create_if_missing`, it is created
        (as a `version` 1 or 2 volume) the first time it is used."""
        if environment_name is not None:
            raise NotImplementedError("Volume.from_name(environment_name=...) is not supported by Ferry "
                                      "(it has no environments); remove environment_name=.")
        return Volume(check_volume_name(name), create_if_missing=create_if_missing, version=version, client=client)

    @staticmethod
    def from_id(volume_id: str, client: Any = None) -> "Volume":
        """The volume with this `object_id` (e.g. an ephemeral volume passed to a function)."""
        if not isinstance(volume_id, str) or not volume_id.startswith("vo-"):
            raise InvalidError(f"{volume_id!r} is not a volume id (they look like 'vo-...').")
        return Volume(None, volume_id=volume_id, client=client)

    @staticmethod
    def ephemeral(client: Any = None, environment_name: str | None = None, version: int | None = None,
                  create_options: Any = None, _heartbeat_sleep: float = 300) -> "_EphemeralVolume":
        """A volume that exists for a `with` (or `async with`) block, then is deleted. `client`:
        a ferry Client (default: the configured server)."""
        if environment_name is not None:
            raise NotImplementedError("Volume.ephemeral(environment_name=...) is not supported by Ferry "
                                      "(it has no environments); remove environment_name=.")
        if create_options is not None:
            raise NotImplementedError("Volume.ephemeral(create_options=...) is not supported by Ferry; "
                                      "use version= to choose the volume version.")
        # _heartbeat_sleep: Ferry ties an ephemeral volume to its client connection, no heartbeat
        return _EphemeralVolume(version, _client_of(client))

    def read_only(self) -> "Volume":
        """This volume, mounted read-only: writes fail, and it never commits."""
        copy = Volume(self.name, create_if_missing=self.create_if_missing, version=self.version,
                      volume_id=self._volume_id, read_only=True, client=self._client)
        copy._ids = self._ids
        return copy

    def with_mount_options(self, *, read_only: bool | None = None, sub_path: str | None = None) -> "Volume":
        if sub_path is not None:
            raise NotImplementedError("Volume.with_mount_options(sub_path=...) is not supported by Ferry yet; "
                                      "mount the whole volume and use the subdirectory's path.")
        return self.read_only() if read_only else self

    # -- identity -------------------------------------------------------------------------
    async def _info(self, client: Client) -> dict[str, Any]:
        info = self._ids.get(client.url)
        if info is None:
            if self._volume_id is not None:
                info = await client.request("volume.get", id=self._volume_id)
            else:
                info = await client.request("volume.get", name=self.name, create_if_missing=self.create_if_missing,
                                            version=self.version)
            self._ids[client.url] = info
        return info

    async def _hydrate(self) -> "Volume":
        await self._info(await self._connect())
        return self

    hydrate = synced(_hydrate)

    @property
    def object_id(self) -> str:
        if self._volume_id is not None:
            return self._volume_id
        client = self._client or Client.from_env_sync()
        return run_sync(self._hydrate())._ids[client.url]["id"]

    def _reference(self, path: str) -> dict[str, Any]:
        """What a function definition stores for `volumes={path: self}`."""
        if self._volume_id is not None:
            return {"path": path, "id": self._volume_id, "read_only": self._read_only}
        return {"path": path, "name": self.name, "create_if_missing": self.create_if_missing,
                "version": self.version, "read_only": self._read_only}

    # -- inside a container that mounts it -------------------------------------------------
    async def _commit(self) -> None:
        from ._container import volumes as mounted

        await asyncio.to_thread(mounted.commit, self)

    async def _reload(self) -> None:
        from ._container import volumes as mounted

        await asyncio.to_thread(mounted.reload, self)

    commit = synced(_commit)
    commit.__doc__ = """Make this container's changes to the volume visible to other containers."""
    reload = synced(_reload)
    reload.__doc__ = """Update this container's view to the latest commit (committing its own changes first);
    fails if files in the volume are open."""

    # -- the Python API (committed files, from anywhere) -----------------------------------
    async def _listdir(self, path: str = "/", *, recursive: bool = False) -> list[FileEntry]:
        client = await self._connect()
        info = await self._info(client)
        rows = await client.request("volume.listdir", id=info["id"], path=path, recursive=recursive)
        return [FileEntry._from_wire(row) for row in rows]

    async def _iterdir(self, path: str = "/", *, recursive: bool = True) -> AsyncIterator[FileEntry]:
        for entry in await self._listdir(path, recursive=recursive):
            yield entry

    async def _read_file(self, path: str) -> AsyncIterator[bytes]:
        client = await self._connect()
        info = await self._info(client)
        found = await client.request("volume.read", id=info["id"], path=path)
        window = [asyncio.ensure_future(client.request("volume.get_chunks", hashes=[d])) for d in found["data"][:4]]
        for index in range(len(found["data"])):
            if index + 4 < len(found["data"]):
                window.append(asyncio.ensure_future(
                    client.request("volume.get_chunks", hashes=[found["data"][index + 4]])))
            yield (await window[index])[0]

    async def _read_file_into_fileobj(self, path: str, fileobj: BinaryIO) -> int:
        written = 0
        async for data in self._read_file(path):
            fileobj.write(data)
            written += len(data)
        return written

    async def _remove_file(self, path: str, recursive: bool = False) -> None:
        client = await self._connect()
        info = await self._info(client)
        await client.request("volume.remove", id=info["id"], path=path, recursive=recursive)

    async def _copy_files(self, src_paths: Iterable[str], dst_path: str, recursive: bool = False) -> None:
        if isinstance(src_paths, str):
            raise InvalidError("copy_files() takes a list of source paths: copy_files([path], destination).")
        client = await self._connect()
        info = await self._info(client)
        await client.request("volume.copy", id=info["id"], sources=list(src_paths), destination=dst_path,
                             recursive=recursive)

    listdir = synced(_listdir)
    iterdir = synced(_iterdir)
    read_file = synced(_read_file)
    read_file_into_fileobj = synced(_read_file_into_fileobj)
    remove_file = synced(_remove_file)
    copy_files = synced(_copy_files)

    def batch_upload(self, force: bool = False) -> "VolumeUpload":
        """Upload local files in one commit: `with vol.batch_upload() as batch:
        batch.put_file(...); batch.put_directory(...)`. Existing files are an error unless `force`."""
        return VolumeUpload(self, force)

    # -- managing volumes -----------------------------------------------------------------
    @staticmethod
    async def _rename(old_name: str, new_name: str) -> None:
        client = await Client.from_env()
        await client.request("volume.rename", name=old_name, new_name=new_name)

    @staticmethod
    async def _delete(name: str) -> None:
        client = await Client.from_env()
        await client.request("volume.delete", name=name)

    rename = synced(_rename)
    delete = synced(_delete)

    async def _volume_info(self) -> "VolumeInfo":
        """The volume's name and when it was created."""
        info = await self._info(await self._connect())
        return VolumeInfo(name=info.get("name"), created_at=datetime.datetime.fromtimestamp(
            info["created"], tz=datetime.timezone.utc) if info.get("created") else None)

    info = synced(_volume_info)

    def get_dashboard_url(self) -> str:
        raise NotImplementedError("Volume.get_dashboard_url is not supported by Ferry: the dashboard has no "
                                  "volume pages; use `ferry volume ls NAME`.")


@dataclass(frozen=True)
class VolumeInfo:
    """What `Volume.info()` returns."""

    name: str | None
    created_at: datetime.datetime | None


class _VolumeManager:
    """`Volume.objects`: create, list and delete named volumes."""

    async def _create(self, name: str, *, version: int | None = None, allow_existing: bool = False,
                      environment_name: str | None = None, client: Any = None) -> None:
        if environment_name is not None:
            raise NotImplementedError("Volume.objects.create(environment_name=...) is not supported by Ferry "
                                      "(it has no environments).")
        connection = _client_of(client) or await Client.from_env()
        if allow_existing:
            await connection.request("volume.get", name=check_volume_name(name), create_if_missing=True,
                                     version=version)
        else:
            await connection.request("volume.create", name=check_volume_name(name), version=version)

    async def _list(self, *, environment_name: str | None = None, client: Any = None) -> list[Volume]:
        if environment_name is not None:
            raise NotImplementedError("Volume.objects.list(environment_name=...) is not supported by Ferry "
                                      "(it has no environments).")
        connection = _client_of(client) or await Client.from_env()
        return [Volume(row["name"], client=_client_of(client)) for row in await connection.request("volume.list")]

    async def _delete(self, name: str, *, allow_missing: bool = False, environment_name: str | None = None,
                      client: Any = None) -> None:
        if environment_name is not None:
            raise NotImplementedError("Volume.objects.delete(environment_name=...) is not supported by Ferry "
                                      "(it has no environments).")
        from .exception import NotFoundError

        connection = _client_of(client) or await Client.from_env()
        try:
            await connection.request("volume.delete", name=name)
        except NotFoundError:
            if not allow_missing:
                raise

    create = synced(_create)
    list = synced(_list)
    delete = synced(_delete)


Volume.objects = _VolumeManager()  # type: ignore[attr-defined]


class VolumeUpload:
    """Collects files to upload; everything is sent and committed when the block ends."""

    def __init__(self, volume: Volume, force: bool) -> None:
        self._volume = volume
        self._force = force
        self._sources: list[Source] = []

    def put_file(self, local_file: str | os.PathLike[str] | BinaryIO, remote_path: str, mode: int | None = None) -> None:
        self._sources.append(file_source(local_file, remote_path, mode))

    def put_directory(self, local_path: str | os.PathLike[str], remote_path: str, recursive: bool = True) -> None:
        self._sources.extend(directory_sources(local_path, remote_path, recursive))

    async def _send(self) -> None:
        client = await self._volume._connect()
        info = await self._volume._info(client)
        await asyncio.to_thread(upload, client.request_sync, info, self._sources,
                                overwrite="files" if self._force else "never")

    def __enter__(self) -> "VolumeUpload":
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        if kind is None:
            run_sync(self._send())

    async def __aenter__(self) -> "VolumeUpload":
        return self

    async def __aexit__(self, kind: Any, *_: Any) -> None:
        if kind is None:
            from ._sync import run_async

            await run_async(self._send())


class _EphemeralVolume:
    """`Volume.ephemeral()`: created on entry (tied to this process's connection), deleted on exit."""

    def __init__(self, version: int | None, client: Client | None = None) -> None:
        if version not in (None, *VERSIONS):
            raise InvalidError(f"Volume version must be 1 or 2, got {version!r}.")
        self._version = version
        self._client = client
        self._volume: Volume | None = None

    async def _create(self) -> Volume:
        if self._client is not None:
            await self._client.connect()
        client = self._client or await Client.from_env()
        info = await client.request("volume.create", ephemeral=True, version=self._version)
        volume = Volume(info["name"], volume_id=info["id"], version=info["version"], client=self._client)
        volume._ids[client.url] = info
        self._volume = volume
        return volume

    async def _drop(self) -> None:
        if self._volume is not None and self._volume._volume_id is not None:
            client = await self._volume._connect()
            await client.request("volume.delete", id=self._volume._volume_id)

    def __enter__(self) -> Volume:
        return run_sync(self._create())

    def __exit__(self, *_: Any) -> None:
        run_sync(self._drop())

    async def __aenter__(self) -> Volume:
        from ._sync import run_async

        return await run_async(self._create())

    async def __aexit__(self, *_: Any) -> None:
        from ._sync import run_async

        await run_async(self._drop())


def check_volumes(value: Any, option: str = "volumes") -> dict[str, Volume]:
    """`volumes=` as {absolute mount path: Volume}, or InvalidError saying how to pass it."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidError(f"{option}= takes a dict of mount paths to volumes, e.g. "
                           f"{option}={{\"/models\": ferry.Volume.from_name(\"models\")}}.")
    checked: dict[str, Volume] = {}
    for raw, volume in value.items():
        if not isinstance(volume, Volume):
            raise InvalidError(f"{option}={{{raw!r}: ...}} takes a ferry.Volume, got {type(volume).__name__}.")
        path = str(raw)
        if not path.startswith("/"):
            raise InvalidError(f"Volume mount path {path!r} must be absolute, e.g. '/models'.")
        path = "/" + clean_path(path, what="mount path")
        if path in _TOP_LEVEL or any(path == r or path.startswith(r + "/") for r in _RESERVED):
            raise InvalidError(f"A volume cannot be mounted at {path!r}: it would hide part of the container's "
                               "system. Use a path of its own, such as '/data' or '/models'.")
        checked[path] = volume
    for path in checked:
        for other in checked:
            if other != path and PurePosixPath(path).is_relative_to(other):
                raise InvalidError(f"Volume mount paths {other!r} and {path!r} are nested; mount volumes at "
                                   "separate paths.")
    return checked


def volume_references(volumes: dict[str, Volume]) -> list[dict[str, Any]] | None:
    """What a function's config stores for `volumes=` (None when there are none)."""
    return [volume._reference(path) for path, volume in sorted(volumes.items())] or None
