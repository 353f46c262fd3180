"""The `container.*` requests of wire API v1 (`ferry container ...`), administrators only:

    container.list  {app?}                          -> [describe_container(...)] (live ones)
    container.logs  {container_id, after?, follow?} -> {container_id, app_id, state, entries}
    container.stop  {container_id}                  -> {container_id, requeued}

A container is named by its id or an unambiguous start of it. `container.logs` also finds
stopped containers (their records and logs stay in the store); with `follow`, the connection
gets the live `log` pushes of the container's app, which the client filters to the container.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from ..exception import InvalidError, NotFoundError
from .access import ADMIN_ONLY, Role
from .connection import Connection
from .logs import LogHub
from .model import Container, ContainerState
from .shapes import Shape, optional, required
from .store import Store

if TYPE_CHECKING:
    from .containers import ContainerManager

Handler = Callable[[Connection, dict[str, Any]], Awaitable[Any]]
LOCAL_NODE = "local"  # the node column of a container that runs on the server's machine


def describe_container(container: Container) -> dict[str, Any]:
    """`{id, app, app_id, function, function_id, node, state, started, age_seconds, inflight,
    served}`: `node` is the cluster node it runs on (FERRY_NODE_ID, ray runtime) or "local"."""
    pool = container.pool
    return {"id": container.id, "app": pool.app.name, "app_id": pool.app.id, "function": pool.tag,
            "function_id": pool.function_id, "node": container.node or LOCAL_NODE,
            "state": container.state.value, "started": container.started,
            "age_seconds": max(0.0, time.time() - container.started), "inflight": len(container.inflight),
            "served": container.served}


class ContainerService:
    """Lists, stops and reads the logs of containers (ContainerManager runs them)."""

    def __init__(self, containers: Callable[[], "ContainerManager"], store: Store, logs: LogHub) -> None:
        self._containers = containers  # the server creates its manager once its port is known
        self.store = store
        self.logs = logs

    def handlers(self) -> dict[str, Handler]:
        return {"container.list": self.list, "container.logs": self.read_logs, "container.stop": self.stop}

    @staticmethod
    def shapes() -> dict[str, Shape]:
        return {"container.list": {"app": optional(str)},
                "container.logs": {"container_id": required(str), "after": optional(int), "follow": optional(bool)},
                "container.stop": {"container_id": required(str)}}

    @staticmethod
    def audiences() -> dict[str, frozenset[Role]]:
        """Administrators only: a container may not see or stop other containers."""
        return {name: ADMIN_ONLY for name in ("container.list", "container.logs", "container.stop")}

    # -- requests -------------------------------------------------------------------------
    async def list(self, conn: Connection, args: dict) -> list[dict[str, Any]]:
        app = args.get("app")
        live = [c for c in self._containers().containers.values() if c.state is not ContainerState.STOPPED]
        if app is not None:
            live = [c for c in live if app in (c.pool.app.name, c.pool.app.id)]
        return [describe_container(c) for c in sorted(live, key=lambda c: c.started)]

    async def stop(self, conn: Connection, args: dict) -> dict[str, Any]:
        container = self._live(args["container_id"])
        # (a generator that has yielded is not run again: it fails instead, scheduler.py)
        held = sum(1 for entry in container.inflight.values() if not entry.yielded)
        self._containers().stop(container, "stopped by `ferry container stop`")
        return {"container_id": container.id, "requeued": held}

    async def read_logs(self, conn: Connection, args: dict) -> dict[str, Any]:
        ref = args["container_id"]
        records = _unique(ref, self.store.container_records(ref), lambda r: r["id"])
        entries = self.store.logs(records["app_id"], after_seq=int(args.get("after", 0)), container=records["id"])
        if args.get("follow"):
            self.logs.subscribe(records["app_id"], conn)
        live = self._containers().containers.get(records["id"])
        state = live.state.value if live is not None else records["state"]
        return {"container_id": records["id"], "app_id": records["app_id"], "state": state, "entries": entries}

    # -- lookups --------------------------------------------------------------------------
    def _live(self, ref: str) -> Container:
        live = [c for c in self._containers().containers.values() if c.state is not ContainerState.STOPPED]
        return _unique(ref, [c for c in live if c.id.startswith(ref)], lambda c: c.id)


def _unique(ref: str, found: list[Any], name: Callable[[Any], str]) -> Any:
    """The one match of `ref` (an id or the start of one), else a clear error."""
    if not ref:
        raise InvalidError("Name a container by its id (see `ferry container list`).")
    exact = [item for item in found if name(item) == ref]
    if exact:
        return exact[-1]
    if not found:
        raise NotFoundError(f"No running container {ref!r}. See `ferry container list`.")
    if len(found) > 1:
        raise InvalidError(f"{ref!r} is the start of {len(found)} container ids "
                           f"({', '.join(name(item) for item in found[:5])}); give more of it.")
    return found[0]
