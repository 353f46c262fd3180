"""Image requests of the wire API (handlers in api.py delegate here).

    image.build  {image, force?, progress_id?}   -> {key, python_version, steps: [...]}
    image.list   {}                              -> {images, layers_bytes, bases, runtime}
    image.rm     {keys, all?}                    -> {removed, freed_bytes, kept_in_use}
    image.logs   {key}                           -> {key, label, state, error, layers: [{key, label, log}]}

`app.create` builds the images of its functions first (`build_functions`), pushing progress
as `image` pushes with the request's `progress_id`, so a failing build creates no app.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..connection import Connection

if TYPE_CHECKING:
    from ..server import Server


def _emitter(conn: Connection, progress_id: str | None, image_key: str) -> Any:
    if not progress_id:
        return None

    def emit(event: dict[str, Any]) -> None:
        # (a node's build names its own `image`: runtimes/ray/prebuild.py)
        conn.push("image", **{"id": progress_id, "image": image_key, **event})  # dropped once closed

    return emit


async def build_functions(server: "Server", functions: list[dict], conn: Connection,
                          progress_id: str | None) -> list[dict]:
    """Build every distinct image of `functions` (in order; on the ray runtime all at once,
    each on its nodes); returns the specs with image secrets stored by name."""
    images = server.images
    chosen = []
    for spec in functions:
        definition = spec["definition"]
        bare = definition.pop("image_for_process_runtime", None)
        if bare is not None and server.runtime.name in ("process", "ray"):  # (both: Ferry's own Python)
            definition = {**definition, "image": bare}
        chosen.append({**spec, "definition": definition})
    configs: dict[str, list[dict]] = {}  # the ray runtime builds an image on the nodes its functions fit
    for spec in chosen:
        if spec["definition"].get("image") is not None:
            configs.setdefault(spec["definition"]["image"]["key"], []).append(spec["definition"].get("config") or {})
    result = []
    distinct: dict[str, dict] = {}  # steps marked force_build are rebuilt with those after them
    for spec in chosen:
        definition = spec["definition"]
        wire = definition.get("image")
        if wire is None:
            result.append(spec)
            continue
        wire = images.resolve_secrets(wire, spec["tag"])
        distinct.setdefault(wire["key"], wire)
        result.append({**spec, "definition": {**definition, "image": wire}})

    async def build(wire: dict) -> None:
        await images.build(wire, emit=_emitter(conn, progress_id, wire["key"]), configs=configs[wire["key"]])

    if server.runtime.name == "ray":  # its nodes build every image at once; the first failure, in order
        outcomes = await asyncio.gather(*map(build, distinct.values()), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
    else:
        for wire in distinct.values():
            await build(wire)
    return result


async def image_build(server: "Server", conn: Connection, args: dict) -> dict:
    wire = server.images.resolve_secrets(args["image"], "image build")
    wire = server.volumes.resolve_image(wire, "image build")  # run_function(volumes=...): ids
    built = await server.images.build(wire, force=bool(args.get("force")), emit=_emitter(conn, args.get("progress_id"), wire["key"]))
    record = server.images.store.record(built.key) or {}
    return {"key": built.key, "python_version": built.python_version, "size": record.get("size"),
            "label": record.get("label")}


def in_use(server: "Server") -> set[str]:
    """Keys of the images live apps run (they are not removed)."""
    keys = set()
    for pool in server.scheduler.pools.values():
        wire = pool.definition.get("image")
        if pool.app.live and wire is not None:
            built = server.images._built.get(wire["key"])
            if built is not None:
                keys.add(built.key)
    return keys


async def image_list(server: "Server", conn: Connection, args: dict) -> dict:
    return server.images.list_images()


async def image_rm(server: "Server", conn: Connection, args: dict) -> dict:
    return server.images.remove(list(args.get("keys") or []), in_use(server), everything=bool(args.get("all")))


async def image_logs(server: "Server", conn: Connection, args: dict) -> dict:
    return server.images.logs(args["key"])
