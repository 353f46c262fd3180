"""The `volume.*` requests of wire API v1 (listed in docs/architecture.md), and how function
definitions refer to volumes.

Clients (the SDK's Python API, the CLI) and containers (mounting, committing) use the same
requests over their own connections; nothing assumes that a container shares a filesystem
with the server. Commits to one volume run one at a time (a lock per volume), their heavy
part (applying a change set to a big manifest, writing it) in a worker thread.

A function's `volumes=` reaches the server as references, which `resolve_functions` checks
before anything is created (so `ferry run` / `ferry deploy` fail early on a missing volume):

    sent by the client                                        stored in the definition
    {"path", "name", "create_if_missing", "version", "read_only"} -> {"path", "name", "id", "read_only"}
    {"path", "id", "read_only"}  (Volume.from_id, ephemeral)  -> the same, with "name"
"""

from __future__ import annotations

import asyncio
import os
import posixpath
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from .._volume_files import DIR, FILE, LINK, MANIFEST_PAGE, TRANSFER_BATCH_BYTES, clean_path, entry_from_wire
from ..exception import InvalidError, NotFoundError
from .access import ADMIN_ONLY, EVERYONE, Role
from .connection import Connection
from .shapes import Shape, optional, required
from .volume_mounts import remove_stale_process_views
from .volumes import OVERWRITE_MODES, VolumeStore, copy_changes, remove_changes

if TYPE_CHECKING:
    from .server import Server

Handler = Callable[[Connection, dict[str, Any]], Awaitable[Any]]
_TYPES = {FILE: "file", DIR: "directory", LINK: "symlink"}


def _file_entry(path: str, entry: Any) -> dict[str, Any]:
    return {"path": path, "type": _TYPES[entry.kind], "size": entry.size, "mtime": entry.mtime, "mode": entry.mode}


def _follow(snapshot: Any, path: str, target: str, volume: str) -> tuple[str, Any]:
    """Where the link at `path` points, inside the volume."""
    if target.startswith("/"):
        raise InvalidError(f"{path!r} in volume {volume!r} is a link to the absolute path {target!r}, which "
                           "depends on where the volume is mounted; read the file it points to instead.")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if resolved == ".." or resolved.startswith("../"):
        raise InvalidError(f"{path!r} in volume {volume!r} links outside the volume ({target!r}).")
    return resolved, snapshot.entries.get(resolved)


class VolumeService:
    """Volume requests, ephemeral volumes' lifetimes, and references in definitions."""

    def __init__(self, server: "Server") -> None:
        self.server = server
        self.store = VolumeStore(server.store, server.blobs)
        remove_stale_process_views()
        self._locks: dict[str, asyncio.Lock] = {}

    def handlers(self) -> dict[str, Handler]:
        return {f"volume.{name}": getattr(self, name) for name in (
            "get", "create", "list", "delete", "rename", "manifest", "listdir", "read", "missing_chunks",
            "put_chunks", "get_chunks", "commit", "remove", "copy")}

    @staticmethod
    def shapes() -> dict[str, Shape]:
        """The arguments each request reads (server/shapes.py); a volume is named by `name` or `id`."""
        ref = {"name": optional(str), "id": optional(str)}
        return {
            "volume.get": {**ref, "create_if_missing": optional(bool), "version": optional(int)},
            "volume.create": {"name": optional(str), "version": optional(int), "ephemeral": optional(bool)},
            "volume.delete": ref,
            "volume.rename": {"name": required(str), "new_name": required(str)},
            "volume.manifest": {**ref, "hash": optional(str), "offset": optional(int)},
            "volume.listdir": {**ref, "path": optional(str), "recursive": optional(bool)},
            "volume.read": {**ref, "path": optional(str), "follow": optional(bool)},
            "volume.missing_chunks": {"hashes": required(list, items=str)},
            "volume.put_chunks": {"chunks": required(list, items=bytes)},
            "volume.get_chunks": {"hashes": required(list, items=str)},
            "volume.commit": {**ref, "puts": optional(list, items=list), "deletes": optional(list, items=str),
                              "overwrite": optional(str)},
            "volume.remove": {**ref, "path": optional(str), "recursive": optional(bool)},
            "volume.copy": {**ref, "sources": optional(list, items=str), "destination": optional(str),
                            "recursive": optional(bool)},
        }

    @staticmethod
    def audiences() -> dict[str, frozenset[Role]]:
        """Containers use the volumes they are given or look up (and ephemeral ones); listing,
        deleting and renaming volumes is for administrators."""
        audiences = {f"volume.{name}": EVERYONE for name in (
            "get", "create", "manifest", "listdir", "read", "missing_chunks", "put_chunks",
            "get_chunks", "commit", "remove", "copy")}
        return {**audiences, **{f"volume.{name}": ADMIN_ONLY for name in ("list", "delete", "rename")}}

    def _volume(self, args: dict[str, Any]) -> dict[str, Any]:
        if args.get("id"):
            return self.store.find(volume_id=args["id"])
        return self.store.find(name=args.get("name"))

    def _describe(self, row: dict[str, Any]) -> dict[str, Any]:
        seq, digest = self.store.head(row["id"])
        return {**row, "seq": seq, "hash": digest}

    async def _commit(self, volume: dict[str, Any], puts: dict, deletes: list[str], overwrite: str) -> dict[str, Any]:
        lock = self._locks.setdefault(volume["id"], asyncio.Lock())
        async with lock:
            head = self.store.head(volume["id"])
            prepared = await asyncio.to_thread(self.store.prepare, volume, head, puts, deletes, overwrite=overwrite)
            return self.store.record(prepared)

    async def _head_snapshot(self, volume: dict[str, Any]) -> Any:
        return await asyncio.to_thread(self.store.snapshot, self.store.head(volume["id"])[1])

    # -- volumes --------------------------------------------------------------------------
    async def get(self, conn: Connection, args: dict) -> dict:
        if args.get("id"):
            return self._describe(self.store.find(volume_id=args["id"]))
        return self._describe(self.store.get(args.get("name"), create_if_missing=bool(args.get("create_if_missing")),
                                             version=args.get("version")))

    async def create(self, conn: Connection, args: dict) -> dict:
        ephemeral = bool(args.get("ephemeral"))
        row = self.store.create(args.get("name"), version=args.get("version"), ephemeral=ephemeral)
        if ephemeral:  # it lives as long as the connection that made it
            conn.on_close.append(lambda: self.store.delete_by_id(row["id"]))
        return self._describe(row)

    async def list(self, conn: Connection, args: dict) -> list[dict]:
        return self.store.list()

    async def delete(self, conn: Connection, args: dict) -> dict:
        row = self._volume(args)
        self.store.delete_by_id(row["id"])
        return {"name": row["name"], "used_by": self.users(row["id"])}

    async def rename(self, conn: Connection, args: dict) -> dict:
        return self._describe(self.store.rename(args["name"], args["new_name"]))

    def users(self, volume_id: str) -> list[str]:
        """Names of live apps whose functions mount the volume."""
        return sorted({p.app.name for p in self.server.scheduler.pools.values() if p.app.live and any(
            ref.get("id") == volume_id for ref in p.definition.get("config", {}).get("volumes") or [])})

    # -- reading --------------------------------------------------------------------------
    async def manifest(self, conn: Connection, args: dict) -> dict:
        """A page of the head manifest (or of manifest `hash`): `entries` from `offset`."""
        volume = self._volume(args)
        seq, digest = self.store.head(volume["id"])
        if args.get("hash"):
            seq, digest = -1, args["hash"]
        snapshot = await asyncio.to_thread(self.store.snapshot, digest)
        offset = int(args.get("offset") or 0)
        page = snapshot.paths[offset:offset + MANIFEST_PAGE]
        following = offset + len(page)
        return {"seq": seq, "hash": digest, "version": volume["version"], "name": volume["name"],
                "entries": [snapshot.entries[p].wire(p) for p in page],
                "next": following if following < len(snapshot.paths) else None}

    async def listdir(self, conn: Connection, args: dict) -> list[dict]:
        volume = self._volume(args)
        path = clean_path(args.get("path", ""))
        snapshot = await self._head_snapshot(volume)
        if path:
            entry = snapshot.entries.get(path)
            if entry is None:
                raise NotFoundError(f"No file or directory {path!r} in volume {volume['name']!r}.")
            if entry.kind != DIR:
                return [_file_entry(path, entry)]
        below = snapshot.under(path)
        if not args.get("recursive"):
            depth = path.count("/") + 1 if path else 0
            below = [p for p in below if p.count("/") == depth]
        return [_file_entry(p, snapshot.entries[p]) for p in below]

    async def read(self, conn: Connection, args: dict) -> dict:
        """A file's entry; symbolic links are followed within the volume (`follow: false`: not)."""
        volume = self._volume(args)
        path = clean_path(args.get("path", ""), allow_root=False)
        snapshot = await self._head_snapshot(volume)
        entry = snapshot.entries.get(path)
        for _ in range(40):
            if entry is None or entry.kind != LINK or args.get("follow") is False:
                break
            path, entry = _follow(snapshot, path, entry.data, volume["name"])
        if entry is None:
            raise NotFoundError(f"No file {path!r} in volume {volume['name']!r}.")
        if entry.kind == LINK and args.get("follow") is not False:
            raise InvalidError(f"Too many levels of symbolic links at {path!r} in volume {volume['name']!r}.")
        if entry.kind == DIR:
            raise InvalidError(f"{path!r} is a directory in volume {volume['name']!r}; read the files in it.")
        return {**_file_entry(path, entry), "data": list(entry.data) if entry.kind == FILE else entry.data}

    # -- chunks ---------------------------------------------------------------------------
    async def missing_chunks(self, conn: Connection, args: dict) -> list[str]:
        return await asyncio.to_thread(self.server.blobs.missing, list(args["hashes"]))

    async def put_chunks(self, conn: Connection, args: dict) -> list[str]:
        chunks = list(args["chunks"])
        if sum(len(c) for c in chunks) > 2 * TRANSFER_BATCH_BYTES:
            raise InvalidError("Too much chunk data in one request; upgrade the client.")
        return await asyncio.to_thread(lambda: [self.server.blobs.put(c) for c in chunks])  # synced at commit

    async def get_chunks(self, conn: Connection, args: dict) -> list[bytes]:
        return await asyncio.to_thread(lambda: [self.server.blobs.get(d) for d in args["hashes"]])

    # -- changing -------------------------------------------------------------------------
    async def commit(self, conn: Connection, args: dict) -> dict:
        """Apply a change set to the current head: `puts` (wire entries), `deletes` (paths)."""
        volume = self._volume(args)
        overwrite = args.get("overwrite", "always")
        if overwrite not in OVERWRITE_MODES:
            raise InvalidError(f"Unknown overwrite mode {overwrite!r}.")
        if conn.role == "container":
            self._check_writable(conn, volume)
        puts = dict(entry_from_wire(item) for item in args.get("puts") or [])
        deletes = [clean_path(p, allow_root=False) for p in args.get("deletes") or []]
        return await self._commit(volume, puts, deletes, overwrite)

    async def remove(self, conn: Connection, args: dict) -> dict:
        volume = self._volume(args)
        path = clean_path(args.get("path", ""), allow_root=False)
        deletes = remove_changes(await self._head_snapshot(volume), path, bool(args.get("recursive")),
                                 volume["name"])
        return await self._commit(volume, {}, deletes, "always")

    async def copy(self, conn: Connection, args: dict) -> dict:
        volume = self._volume(args)
        sources = [clean_path(p, what="source path", allow_root=False) for p in args.get("sources") or []]
        if not sources:
            raise InvalidError("copy_files() needs at least one source path.")
        raw = str(args.get("destination", ""))
        destination = clean_path(raw, what="destination path")
        puts = copy_changes(await self._head_snapshot(volume), sources, destination,
                            into=raw.endswith("/") or len(sources) > 1, recursive=bool(args.get("recursive")),
                            volume=volume["name"])
        return await self._commit(volume, puts, [], "files")

    def _check_writable(self, conn: Connection, volume: dict[str, Any]) -> None:
        container = self.server.containers.containers.get(conn.peer_id)
        refs = [] if container is None else [
            r for r in container.pool.definition.get("config", {}).get("volumes") or [] if r.get("id") == volume["id"]]
        if refs and all(r.get("read_only") for r in refs):
            raise InvalidError(f"Volume {volume['name']!r} is mounted read-only in this container; it cannot commit.")

    # -- references in function definitions ------------------------------------------------
    def resolve_functions(self, functions: list[dict]) -> list[dict]:
        """Function specs whose volume references (of the function, and of `Image.run_function`
        steps of its image) carry ids; NotFoundError naming every missing volume (before
        anything is created or built)."""
        missing: dict[str, list[str]] = {}
        resolved = []
        for spec in functions:
            definition = spec["definition"]
            config = definition.get("config") or {}
            if config.get("volumes"):
                definition = dict(definition, config=dict(config, volumes=self._resolve(
                    config["volumes"], spec["tag"], missing)))
            if definition.get("image"):
                definition = dict(definition, image=self._resolve_image(definition["image"], spec["tag"], missing))
            resolved.append(dict(spec, definition=definition))
        _raise_missing(missing)
        return resolved

    def resolve_image(self, wire: dict[str, Any], user: str) -> dict[str, Any]:
        """An image (`ferry image build`) whose run_function steps' volumes carry ids."""
        missing: dict[str, list[str]] = {}
        wire = self._resolve_image(wire, user, missing)
        _raise_missing(missing)
        return wire

    def _resolve_image(self, wire: dict[str, Any], user: str, missing: dict[str, list[str]]) -> dict[str, Any]:
        steps = wire.get("steps") or []
        if not any(s.get("kind") == "run_function" and s["args"].get("volumes") for s in steps):
            return wire
        resolved = []
        for step in steps:
            if step.get("kind") == "run_function" and step["args"].get("volumes"):
                refs = self._resolve(step["args"]["volumes"], f"{user} (image step {step['label']})", missing,
                                     runtime_check=False)
                step = {**step, "args": {**step["args"], "volumes": refs}}
            resolved.append(step)
        return {**wire, "steps": resolved}

    def resolve_config(self, config: dict[str, Any], user: str) -> dict[str, Any]:
        """`config` (a `with_options` override) with its volume references resolved."""
        if not config.get("volumes"):
            return config
        return self.resolve_functions([{"tag": user, "definition": {"config": config}}])[0]["definition"]["config"]

    def _resolve(self, refs: list[dict[str, Any]], user: str, missing: dict[str, list[str]], *,
                 runtime_check: bool = True) -> list[dict]:
        if runtime_check:
            self.check_runtime(user)
        resolved = []
        for ref in refs:
            try:
                if ref.get("id"):
                    row = self.store.find(volume_id=ref["id"])
                else:
                    row = self.store.get(ref["name"], create_if_missing=bool(ref.get("create_if_missing")),
                                         version=ref.get("version"))
            except NotFoundError:
                missing.setdefault(ref.get("name") or ref.get("id") or "?", []).append(user)
                continue
            resolved.append({"path": ref["path"], "name": row["name"], "id": row["id"],
                             "read_only": bool(ref.get("read_only"))})
        return resolved

    def check_runtime(self, user: str) -> None:
        """The process runtime mounts volumes in a private mount namespace, which needs root."""
        if self.server.runtime.name == "process" and os.geteuid() != 0:
            raise InvalidError(
                f"{user} mounts volumes, which need the sandbox runtime or a server running as root: the "
                "process runtime binds each volume at its path in a private mount namespace (unshare --mount). "
                "Run the server as root, or use FERRY_RUNTIME=sandbox.")


def _raise_missing(missing: dict[str, list[str]]) -> None:
    if missing:
        raise NotFoundError("; ".join(
            f"Volume {name!r} not found (used by {', '.join(users)}): create it with `ferry volume create {name}` "
            f"or declare it with Volume.from_name({name!r}, create_if_missing=True)"
            for name, users in missing.items()) + ".")
