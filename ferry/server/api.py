"""The control plane's request handlers (wire API v1). Each `@rpc("name")` method answers one
request; `docs/architecture.md` lists them with their arguments and results."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from .. import __version__
from ..exception import InvalidError, NotFoundError, PermissionDeniedError
from .access import ADMIN_ONLY, EVERYONE, Role, table_for
from .connection import Connection
from .shapes import Shape, check, checked, optional, required
from .images import rpc as image_rpc
from .model import App, AppState, Call, ContainerState, Input, OutputStatus, Pool, new_future

if TYPE_CHECKING:
    from .server import Server

_HANDLERS: dict[str, Callable[..., Awaitable[Any]]] = {}
_AUDIENCES: dict[str, frozenset[Role]] = {}
_SHAPES: dict[str, Shape] = {}


def rpc(name: str, *, allow: frozenset[Role] = ADMIN_ONLY, shape: Shape | None = None) -> Callable:
    """Register a request handler; `allow` names the roles that may send it (server/access.py),
    `shape` the arguments it reads (server/shapes.py), checked before it runs."""
    def register(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        _HANDLERS[name] = method
        _AUDIENCES[name] = allow
        _SHAPES[name] = shape or {}
        return method

    return register


S, I, B, N = str, int, bool, (int, float)
# requests that store anonymous secrets before what uses them exists (functions installed at the
# end of app.create, a sandbox's container started): they hold them until they answer
HOLD_ANONYMOUS_SECRETS = frozenset({"app.create", "function.variant", "image.build", "sandbox.create"})
FUNCTION_SPEC: Shape = {"tag": required(S), "definition": required(dict)}


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


def _call_id(args: dict) -> str:
    """Clients name their calls, so pushes for a call can be routed before the reply."""
    call_id = args.get("call_id") or _new_id("fc")
    if not isinstance(call_id, str) or not call_id.startswith("fc-") or len(call_id) > 64:
        raise InvalidError(f"Invalid call id {call_id!r}.")
    return call_id


def _runtime_now(setting: str, current: str) -> dict[str, Any]:
    from .runtimes import auto_runtime

    now, reason = auto_runtime() if setting == "auto" else (current, None)
    return {"runtime_setting": setting, "runtime_now": now, "runtime_now_reason": reason}


class API:
    """Request handlers bound to one server."""

    def __init__(self, server: "Server") -> None:
        self.server = server
        self.spawn_waiters: dict[str, list[asyncio.Future]] = {}
        self._tables: dict[Role, dict[str, Callable[[Connection, dict], Awaitable[Any]]]] = {}

    def handlers(self, role: Role) -> dict[str, Callable[[Connection, dict], Awaitable[Any]]]:
        """The request table of a peer with `role` (built once per role)."""
        table = self._tables.get(role)
        if table is None:
            handlers = {name: getattr(self, method.__name__) for name, method in _HANDLERS.items()}
            audiences, shapes = dict(_AUDIENCES), dict(_SHAPES)
            for service in self.server.rpc_services:  # volume.*: server/volume_rpc.py, ...
                handlers.update(service.handlers())
                audiences.update(service.audiences())
                shapes.update(service.shapes() if hasattr(service, "shapes") else {})
            handlers = {name: checked(name, shapes.get(name), handler) for name, handler in handlers.items()}
            for name in HOLD_ANONYMOUS_SECRETS & handlers.keys():  # (server/secrets.py)
                handlers[name] = self.server.secrets.held_during(handlers[name])
            table = self._tables[role] = table_for(role, handlers, audiences)
        return table

    # -- lookups --------------------------------------------------------------------------
    def _app(self, ref: str) -> App:
        apps = self.server.apps
        if ref in apps:
            return apps[ref]
        live = [a for a in apps.values() if a.name == ref and a.live]
        if live:
            return live[-1]
        raise NotFoundError(f"No running or deployed app named {ref!r}. See `ferry app list`.")

    def _pool(self, function_id: str) -> Pool:
        pool = self.server.scheduler.pools.get(function_id)
        if pool is None:
            raise NotFoundError(f"Function {function_id} does not exist (was its app stopped?).")
        if not pool.app.live:
            raise InvalidError(f"App {pool.app.name!r} is stopped; deploy or run it again.")
        return pool

    # -- server ---------------------------------------------------------------------------
    @rpc("server.status", shape={"space": optional(B)})
    async def server_status(self, conn: Connection, args: dict) -> dict:
        """The server's state; with `space`, the bytes each kind of stored data uses (walks the
        stores: `ferry server status` asks for it, frequent callers do not)."""
        server = self.server
        space = {"space": await server.maintenance.space()} if args.get("space") else {}
        return {
            "version": __version__,
            "pid": os.getpid(),
            "url": server.url,
            "home": str(server.home),
            "runtime": server.runtime.name,
            # what FERRY_RUNTIME=auto would pick now (packages installed since the start?)
            **_runtime_now(server.runtime_setting, server.runtime.name),
            "gpus": server.gpus.describe(),
            "started": server.started,
            "apps": sum(1 for a in server.apps.values() if a.live),
            "containers": sum(1 for c in server.containers.containers.values() if c.live),
            "web_url": server.gateway.base_url,
            "web_port": server.gateway.port,
            **space,
        }

    @rpc("server.shutdown")
    async def server_shutdown(self, conn: Connection, args: dict) -> dict:
        asyncio.get_running_loop().call_later(0.05, self.server.request_stop)
        return {}

    @rpc("server.gc", shape={"dry_run": optional(B)})
    async def server_gc(self, conn: Connection, args: dict) -> dict:
        """A maintenance pass now (server/maintenance.py): log retention, unused anonymous
        secrets, and garbage collection of blobs and volume chunks; `dry_run`: only report
        what the collection would delete."""
        return await self.server.maintenance.run(dry_run=bool(args.get("dry_run")))

    # -- blobs ----------------------------------------------------------------------------
    @rpc("blob.missing", allow=EVERYONE, shape={"hashes": required(list, items=str)})
    async def blob_missing(self, conn: Connection, args: dict) -> list[str]:
        return self.server.blobs.missing(list(args["hashes"]))

    @rpc("blob.put", allow=EVERYONE, shape={"data": required(bytes), "hash": optional(S)})
    async def blob_put(self, conn: Connection, args: dict) -> str:
        return self.server.blobs.put(args["data"], args.get("hash"))

    @rpc("blob.get", allow=EVERYONE, shape={"hash": required(S)})
    async def blob_get(self, conn: Connection, args: dict) -> bytes:
        return self.server.blobs.get(args["hash"])

    # -- secrets (values go in, never out: see server/secrets.py) --------------------------
    @rpc("secret.create", shape={"name": required(S), "values": required(dict), "force": optional(B)})
    async def secret_create(self, conn: Connection, args: dict) -> dict:
        return self.server.secrets.create(args["name"], args["values"], force=bool(args.get("force")))

    @rpc("secret.list")
    async def secret_list(self, conn: Connection, args: dict) -> list[dict]:
        return self.server.secrets.list()

    @rpc("secret.delete", shape={"name": required(S)})
    async def secret_delete(self, conn: Connection, args: dict) -> dict:
        name = args["name"]
        self.server.secrets.delete(name)
        used_by = sorted({p.app.name for p in self.server.scheduler.pools.values() if p.app.live and any(
            ref.get("name") == name for ref in p.definition.get("config", {}).get("secrets") or [])})
        return {"name": name, "used_by": used_by}

    def _resolve_secrets(self, functions: list[dict]) -> list[dict]:
        """Function specs whose secret references are names only; raises NotFoundError naming
        every missing secret or required key (before anything is created)."""
        configs = [spec["definition"].get("config") or {} for spec in functions]
        resolved = self.server.secrets.resolve(
            (spec["tag"], config.get("secrets") or []) for spec, config in zip(functions, configs))
        return [dict(spec, definition=dict(spec["definition"], config=dict(config, secrets=refs)))
                if refs else spec for spec, config, refs in zip(functions, configs, resolved)]

    # -- client credentials (server/auth.py): who may use this control plane ----------------
    @rpc("credential.create", shape={"name": required(S)})
    async def credential_create(self, conn: Connection, args: dict) -> dict:
        created = self.server.auth.create(args.get("name") or "")
        tls = self.server.tls
        return {**created, "server_url": self.server.url,
                "tls_fingerprint": tls.fingerprint if tls is not None and tls.generated else None}

    @rpc("credential.list")
    async def credential_list(self, conn: Connection, args: dict) -> list[dict]:
        return self.server.auth.list()

    @rpc("credential.revoke", shape={"token_id": required(S)})
    async def credential_revoke(self, conn: Connection, args: dict) -> dict:
        token_id = args.get("token_id")
        if conn.principal is not None and token_id == conn.principal.credential_id:
            # answer first: revoking closes this very connection
            asyncio.get_running_loop().call_soon(self.server.auth.revoke, token_id)
            return {"token_id": token_id, "closed_connections": None}
        return self.server.auth.revoke(token_id)

    # -- proxy auth tokens of web endpoints (server/gateway/tokens.py) ----------------------
    @rpc("token.create", shape={"name": optional(S)})
    async def token_create(self, conn: Connection, args: dict) -> dict:
        return self.server.gateway.tokens.create(args.get("name") or "")

    @rpc("token.list")
    async def token_list(self, conn: Connection, args: dict) -> list[dict]:
        return self.server.gateway.tokens.list()

    @rpc("token.revoke", shape={"token_id": required(S)})
    async def token_revoke(self, conn: Connection, args: dict) -> dict:
        return self.server.gateway.tokens.revoke(args["token_id"])

    # -- apps -----------------------------------------------------------------------------
    @rpc("app.create", shape={"name": required(S), "kind": optional(S), "functions": optional(list, items=dict),
                              "progress_id": optional(S), "app_id": optional(S), "detach": optional(B)})
    async def app_create(self, conn: Connection, args: dict) -> dict:
        """Create (or, for `deployed`, update) an app with its functions."""
        name: str = args["name"]
        kind: str = args.get("kind") or "ephemeral"
        for index, spec in enumerate(args.get("functions") or []):
            check(f"app.create: functions[{index}]", FUNCTION_SPEC, spec)
        functions: list[dict] = self._resolve_secrets(args.get("functions") or [])
        functions = self.server.volumes.resolve_functions(functions)  # missing volumes fail here
        warnings = []  # (a GPU no node of a Ray cluster has yet: a warning, shown by the client)
        for spec in functions:  # a GPU request no machine can ever meet fails now, not as a hang
            warning = self.server.check_placeable(spec["tag"], spec["definition"])
            if warning:
                warnings.append(warning)
        # images first (off the event loop, progress pushed to conn): a failed build creates nothing
        functions = await image_rpc.build_functions(self.server, functions, conn, args.get("progress_id"))
        server = self.server
        update = args.get("app_id")  # `ferry serve` reloading: the same ephemeral app, new code
        server.gateway.routes.check(name, kind == "ephemeral", functions)
        if kind == "deployed":
            existing = [a for a in server.apps.values() if a.name == name and a.state is AppState.DEPLOYED]
            app = existing[-1] if existing else None
            if app is None:
                app = App(id=_new_id("ap"), name=name, state=AppState.DEPLOYED)
                server.apps[app.id] = app
                server.store.insert_app(app.id, name, "deployed", "deployed")
            else:
                server.store.bump_app_version(app.id)
        elif kind == "ephemeral" and update:
            app = self._app(update)
            if app.owner is not conn or app.state is not AppState.RUNNING:
                raise InvalidError(f"App {update!r} is not a running ephemeral app of this connection.")
        elif kind == "ephemeral":
            app = App(id=_new_id("ap"), name=name, state=AppState.RUNNING, owner=conn)
            server.apps[app.id] = app
            server.store.insert_app(app.id, name, "ephemeral", "running")
            if not args.get("detach"):  # detached (`ferry run --detach`): runs until `app.stop`
                conn.on_close.append(lambda: asyncio.ensure_future(server.stop_app(app, "client disconnected")))
        else:
            raise InvalidError(f"Unknown app kind {kind!r}.")
        kept = []
        for spec in functions:
            tag = spec["tag"]
            function_id = app.objects.get(tag) or _new_id("fu")
            app.objects[tag] = function_id
            kept.append(function_id)
            server.install_function(app, function_id, tag, spec["definition"])
        if kind == "deployed" or update:
            for tag, fid in list(app.objects.items()):
                if fid not in kept:
                    server.remove_function(fid)
                    del app.objects[tag]
        if kind == "deployed" or update:
            server.store.delete_functions(app.id, kept)
        server.gateway.refresh()
        urls = server.gateway.urls(app)
        return {"app_id": app.id, "objects": dict(app.objects),
                "web_urls": {tag: u["url"] for tag, u in urls.items()},
                "web_path_urls": {tag: u["path_url"] for tag, u in urls.items()},
                "runtime": server.runtime.name, "dashboard_url": f"{server.gateway.base_url}/apps/{app.id}",
                "warnings": warnings}

    @rpc("app.attach", shape={"app_id": required(S)})
    async def app_attach(self, conn: Connection, args: dict) -> dict:
        """The client of a running ephemeral app, back after the server restarted: the app is
        its again (it stops when this connection closes), and is not stopped for want of it."""
        app = self.server.apps.get(args["app_id"])
        if app is None or app.state is not AppState.RUNNING:
            raise NotFoundError(f"App {args['app_id']!r} is not running (it was stopped while this client "
                                "was away, or its server's state was lost); run it again.")
        if app.owner is not None and app.owner is not conn and not app.owner.closed:
            raise InvalidError(f"App {app.id!r} belongs to another live connection.")
        if app.owner is not conn:
            app.owner = conn
            server = self.server
            conn.on_close.append(lambda: asyncio.ensure_future(server.stop_app(app, "client disconnected")))
        self.server.unclaimed_apps.discard(app.id)
        return {"app_id": app.id}

    @rpc("app.stop", shape={"app": required(S), "reason": optional(S)})
    async def app_stop(self, conn: Connection, args: dict) -> dict:
        app = self._app(args["app"])
        await self.server.stop_app(app, args.get("reason", "stopped by request"))
        return {"app_id": app.id}

    @rpc("app.lookup", allow=EVERYONE, shape={"name": required(S), "create_if_missing": optional(B)})
    async def app_lookup(self, conn: Connection, args: dict) -> dict:
        """`App.lookup`: the running or deployed app named `name`; with `create_if_missing`
        (administrators only), a deployed app with no functions is created (for sandboxes)."""
        name = args["name"]
        try:
            app = self._app(name)
        except NotFoundError:
            if not args.get("create_if_missing"):
                raise NotFoundError(f"No running or deployed app named {name!r}: deploy it, or pass "
                                    "create_if_missing=True to create an empty one.") from None
            if conn.principal.role is not Role.ADMIN:
                raise PermissionDeniedError("App.lookup(create_if_missing=True) cannot create an app from inside "
                                            "a container: create it outside (or deploy it) first.") from None
            app = App(id=_new_id("ap"), name=name, state=AppState.DEPLOYED)
            self.server.apps[app.id] = app
            self.server.store.insert_app(app.id, name, "deployed", "deployed")
        return {"app_id": app.id, "name": app.name, "objects": dict(app.objects)}

    @rpc("app.list", shape={"all": optional(B)})
    async def app_list(self, conn: Connection, args: dict) -> list[dict]:
        rows = self.server.store.apps()
        if not args.get("all"):
            rows = [r for r in rows if r["state"] != "stopped" or time.time() - (r["stopped"] or 0) < 3600]
        for row in rows:
            app = self.server.apps.get(row["id"])
            row["functions"] = len(app.objects) if app else 0
            row["containers"] = sum(
                len(p.live_containers()) for p in self.server.scheduler.pools.values() if p.app is app
            ) if app else 0
        return rows

    @rpc("app.show", shape={"app": required(S)})
    async def app_show(self, conn: Connection, args: dict) -> dict:
        app = self._app(args["app"])
        pools = [p for p in self.server.scheduler.pools.values() if p.app is app]
        web = {tag: {"web_url": u["url"], "web_path_url": u["path_url"]}
               for tag, u in self.server.gateway.urls(app).items()}
        functions = []
        for pool in pools:
            functions.append({
                "tag": pool.tag,
                "function_id": pool.function_id,
                "bound": pool.params is not None,
                "kind": pool.definition.get("kind"),
                "config": {k: v for k, v in pool.definition.get("config", {}).items() if v is not None},
                "overrides": pool.overrides,
                "queued": len(pool.queue),
                "containers": [
                    {"id": c.id, "state": c.state.value, "inflight": len(c.inflight),
                     "boot_seconds": c.boot_seconds, "enter_seconds": c.enter_seconds, "node": c.node}
                    for c in pool.containers.values()
                ],
                "stats": pool.stats.summary(),
                "init_error": (pool.last_init_error or {}).get("repr"),
                # {schedule, next_run, last_run, last_status} of a scheduled function, else None
                "schedule": self.server.schedules.describe(pool.function_id),
                **(web.get(pool.tag, {}) if pool.base_id is None else {}),  # web_url, web_path_url
                # a class's web endpoints: {method: {web_url, web_path_url}}
                **({"web_methods": {method: web[f"{pool.tag}.{method}"] for method in pool.definition["web_methods"]
                                    if f"{pool.tag}.{method}" in web}}
                   if pool.base_id is None and pool.definition.get("web_methods") else {}),
            })
        return {"app_id": app.id, "name": app.name, "state": app.state.value,
                "created": app.created, "functions": functions}

    @rpc("app.logs", shape={"app": required(S), "after": optional(I), "since": optional(*N),
                            "function": optional(S), "container": optional(S), "follow": optional(B)})
    async def app_logs(self, conn: Connection, args: dict) -> dict:
        app_ref = args["app"]
        try:
            app_id = self._app(app_ref).id
        except NotFoundError:
            matches = [r for r in self.server.store.apps() if app_ref in (r["id"], r["name"])]
            if not matches:
                raise
            app_id = matches[-1]["id"]
        since = args.get("since")  # optional filters: epoch seconds, a function's tag, a container id prefix
        entries = self.server.store.logs(app_id, after_seq=int(args.get("after", 0)),
                                         since=None if since is None else float(since),
                                         function=args.get("function"), container=args.get("container"))
        if args.get("follow"):
            self.server.logs.subscribe(app_id, conn)
        return {"app_id": app_id, "entries": entries}

    @rpc("app.subscribe_logs", shape={"app_id": required(S)})
    async def app_subscribe_logs(self, conn: Connection, args: dict) -> dict:
        self.server.logs.subscribe(args["app_id"], conn)
        return {}

    # -- functions ------------------------------------------------------------------------
    @rpc("function.lookup", allow=EVERYONE, shape={"app": required(S), "tag": required(S)})
    async def function_lookup(self, conn: Connection, args: dict) -> dict:
        app_name, tag = args["app"], args["tag"]
        apps = [a for a in self.server.apps.values() if a.name == app_name and a.state is AppState.DEPLOYED]
        if not apps:
            raise NotFoundError(
                f"No deployed app named {app_name!r}. Deploy it first with `ferry deploy`."
            )
        app = apps[-1]
        function_id = app.objects.get(tag)
        if function_id is None:
            raise NotFoundError(
                f"App {app_name!r} has no function or class named {tag!r}. "
                f"It has: {', '.join(sorted(app.objects)) or 'nothing'}."
            )
        pool = self.server.scheduler.pools[function_id]
        urls = self.server.gateway.urls(app)
        web = urls.get(tag, {})
        method_urls = {method: urls[f"{tag}.{method}"]["path_url"]
                       for method in pool.definition.get("web_methods") or {} if f"{tag}.{method}" in urls}
        return {"function_id": function_id, "definition": pool.definition, "app_id": app.id,
                "web_url": web.get("url"), "web_path_url": web.get("path_url"),
                **({"web_method_urls": method_urls} if method_urls else {})}

    @rpc("function.bind", allow=EVERYONE, shape={"function_id": required(S), "params": required(bytes)})
    async def function_bind(self, conn: Connection, args: dict) -> dict:
        """A pool for one set of class parameters: `Model(size=3)`."""
        base = self._pool(args["function_id"])
        params: bytes = args["params"]
        bound_id = f"{base.function_id}/{hashlib.sha256(params).hexdigest()[:16]}"
        self.server.derive_pool(bound_id, base, params=params, config_overrides={})
        return {"function_id": bound_id}

    @rpc("function.variant", allow=EVERYONE, shape={"function_id": required(S), "config": required(dict)})
    async def function_variant(self, conn: Connection, args: dict) -> dict:
        """A pool running the same code with some options changed (`with_options`)."""
        base = self._pool(args["function_id"])
        overrides: dict = self.server.secrets.resolve_config(args["config"], base.tag)
        overrides = self.server.volumes.resolve_config(overrides, base.tag)
        if overrides.get("image") is not None:  # with_options(image=...): built before the pool exists
            image = self.server.images.resolve_secrets(overrides["image"], base.tag)
            image = self.server.volumes.resolve_image(image, base.tag)
            await self.server.images.build(image)
            overrides = {**overrides, "image": image}
        digest = hashlib.sha256(repr(sorted(overrides.items())).encode()).hexdigest()[:16]
        self.server.check_placeable(base.tag, {"config": overrides})
        variant_id = f"{base.function_id}~{digest}"
        self.server.derive_pool(variant_id, base, params=base.params, config_overrides=overrides)
        return {"function_id": variant_id}

    @rpc("function.update_autoscaler", shape={"function_id": required(S), "settings": required(dict)})
    async def function_update_autoscaler(self, conn: Connection, args: dict) -> dict:
        pool = self._pool(args["function_id"])
        allowed = {"min_containers", "max_containers", "buffer_containers", "scaledown_window"}
        for key, value in args["settings"].items():
            if key not in allowed:
                raise InvalidError(f"update_autoscaler() got an unknown setting {key!r}.")
            pool.overrides[key] = value
        if pool.app.state is AppState.DEPLOYED:  # kept across server restarts, until a redeploy
            self.server.store.set_autoscaler_overrides(pool.function_id, pool.overrides)
        self.server.autoscaler.scale(pool)
        return {}

    @rpc("function.stats", allow=EVERYONE, shape={"function_id": required(S)})
    async def function_stats(self, conn: Connection, args: dict) -> dict:
        """Now, for `Function.get_current_stats()`: inputs waiting for a container, inputs
        running, and live containers (of this pool only: a class instance or variant has its own)."""
        pool = self._pool(args["function_id"])
        live = [c for c in pool.containers.values() if c.live]
        running = sum(len(c.inflight) for c in live)
        return {"backlog": len(pool.queue), "running_inputs": running, "num_total_runners": len(live)}

    # -- calls ----------------------------------------------------------------------------
    @rpc("function.call", allow=EVERYONE, shape={"function_id": required(S), "args": required(dict),
                                                 "method": optional(S), "call_id": optional(S)})
    async def function_call(self, conn: Connection, args: dict) -> dict:
        """Run one input and answer with its output (`.remote()`)."""
        pool = self._pool(args["function_id"])
        reply = new_future()

        def deliver(entry: Input, item: dict) -> None:
            if item["status"] == OutputStatus.ITEM.value:
                conn.push("gen", call=call.id, item=item)
            elif not reply.done():
                reply.set_result(item)

        # not journaled: its caller waits for it, keeps its input, and sends it again under the
        # same call id after a restart (docs/reliability.md)
        call = Call(id=_call_id(args), pool=pool, kind="remote", deliver=deliver, owner=conn, closed=True)
        self.server.scheduler.open_call(call)
        self.server.scheduler.submit(call, [(0, args["args"], args.get("method"))])
        closer = lambda: self.server.cancel_call(call)  # noqa: E731
        conn.on_close.append(closer)
        try:
            return await reply
        finally:
            if closer in conn.on_close:
                conn.on_close.remove(closer)

    @rpc("function.map", allow=EVERYONE, shape={"function_id": required(S), "call_id": optional(S)})
    async def function_map(self, conn: Connection, args: dict) -> dict:
        """Open a call whose inputs arrive as `map.inputs` pushes; outputs go back as pushes."""
        pool = self._pool(args["function_id"])
        call = Call(id=_call_id(args), pool=pool, kind="map", owner=conn, durable=True,
                    deliver=lambda entry, item: conn.push_output(call.id, item))
        self.server.scheduler.open_call(call)
        conn.on_close.append(lambda: self.server.cancel_call(call))
        return {"call_id": call.id}

    @rpc("call.resume", allow=EVERYONE, shape={"call_id": required(S), "function_id": required(S),
                                               "have": required(list, items=int), "have_below": optional(I)})
    async def call_resume(self, conn: Connection, args: dict) -> dict:
        """A map's caller back after a lost connection, holding the outputs `have` and those of
        every index below `have_below`: the call goes
        on with this connection (the outputs kept for it are pushed now), and the answer names the
        inputs the server holds (`known`); the caller sends the others again. A call the server
        does not hold (its inputs were not yet written, or it was cancelled) starts afresh."""
        call_id = _call_id(args)
        restored = self.server.restored_calls.pop(call_id, None)
        if restored is None or restored[0].pool.function_id != args["function_id"]:
            await self.function_map(conn, {"function_id": args["function_id"], "call_id": call_id})
            return {"known": []}
        call, indices = restored
        below = int(args.get("have_below") or 0)
        have = set(args["have"]) | {idx for idx in indices if idx < below}
        self.server.scheduler.forget(call, have)
        self.server.journal.ack(call.id, sorted(have & indices))
        call.owner = conn
        call.deliver = lambda entry, item: conn.push_output(call.id, item)
        conn.on_close.append(lambda: self.server.cancel_call(call))
        held, call.held = call.held, {}
        for idx in sorted(held):
            if idx not in have:
                conn.push_output(call.id, held[idx])
        return {"known": sorted(indices - have)}

    def on_call_ack(self, conn: Connection, frame: dict) -> None:
        """`call.ack`: the caller has these outputs of a call (`idxs`), or all of them (none
        named): the journal forgets them."""
        call_id, idxs = frame.get("call"), frame.get("idxs")
        if not isinstance(call_id, str):
            return
        if idxs is None:
            self.server.journal.drop(call_id)
        elif isinstance(idxs, list) and all(isinstance(i, int) for i in idxs):
            self.server.journal.ack(call_id, idxs)

    def on_map_inputs(self, conn: Connection, frame: dict) -> None:
        call = self.server.scheduler.calls.get(frame["call"])
        if call is None or call.owner is not conn:
            return
        if frame.get("items"):
            self.server.scheduler.submit(call, [(i, a, m) for i, a, m in frame["items"]])
        if frame.get("last"):
            call.closed = True
            if call.finished:
                self.server.scheduler.calls.pop(call.id, None)

    @rpc("function.spawn", allow=EVERYONE, shape={"function_id": required(S), "args": required(dict),
                                                  "method": optional(S), "call_id": optional(S)})
    async def function_spawn(self, conn: Connection, args: dict) -> dict:
        """Store one input and start it; a call id the server stored already (sent again by a
        client that lost the connection before the answer) is not started twice."""
        pool = self._pool(args["function_id"])
        call_id = _call_id(args)
        if self.server.store.spawned(call_id) is not None:
            return {"call_id": call_id}
        self.server.store.insert_spawned(call_id, pool.function_id, args.get("method"), args["args"])
        self.server.start_spawned(call_id, pool, args["args"], args.get("method"))
        return {"call_id": call_id}

    @rpc("call.get", allow=EVERYONE, shape={"call_id": required(S), "timeout": optional(*N)})
    async def call_get(self, conn: Connection, args: dict) -> dict:
        call_id = args["call_id"]
        record = self.server.store.spawned(call_id)
        if record is None:
            raise NotFoundError(f"No spawned call with id {call_id!r}.")
        if record["state"] == "done":
            return record["output"]
        timeout = args.get("timeout")
        waiter = new_future()
        self.spawn_waiters.setdefault(call_id, []).append(waiter)
        try:
            return await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            return {"status": "pending"}
        finally:
            waiters = self.spawn_waiters.get(call_id, [])
            if waiter in waiters:
                waiters.remove(waiter)

    def spawned_finished(self, call_id: str, item: dict) -> None:
        self.server.store.finish_spawned(call_id, item)
        for waiter in self.spawn_waiters.pop(call_id, []):
            if not waiter.done():
                waiter.set_result(item)

    @rpc("call.cancel", allow=EVERYONE, shape={"call_id": required(S)})
    async def call_cancel(self, conn: Connection, args: dict) -> dict:
        call_id = args["call_id"]
        call = self.server.scheduler.calls.get(call_id)
        if call is not None:
            self.server.cancel_call(call)
        record = self.server.store.spawned(call_id)
        if record is not None and record["state"] != "done":
            self.spawned_finished(call_id, {"status": OutputStatus.CANCELLED.value, "idx": 0,
                                            "msg": "The call was cancelled."})
        return {}

    @rpc("app.stats", shape={"app_id": required(S)})
    async def app_stats(self, conn: Connection, args: dict) -> dict:
        app = self.server.apps.get(args["app_id"])
        if app is None:
            raise NotFoundError(f"No app {args['app_id']!r}.")
        return {
            pool.function_id: {"tag": pool.tag, **pool.stats.summary()}
            for pool in self.server.scheduler.pools.values() if pool.app is app
        }

    # -- images (ferry/server/images/rpc.py) -----------------------------------------------
    @rpc("image.build", shape={"image": required(dict), "force": optional(B), "progress_id": optional(S)})
    async def image_build(self, conn: Connection, args: dict) -> dict:
        return await image_rpc.image_build(self.server, conn, args)

    @rpc("image.list")
    async def image_list(self, conn: Connection, args: dict) -> dict:
        return await image_rpc.image_list(self.server, conn, args)

    @rpc("image.rm", shape={"keys": optional(list, items=str), "all": optional(B)})
    async def image_rm(self, conn: Connection, args: dict) -> dict:
        return await image_rpc.image_rm(self.server, conn, args)

    @rpc("image.logs", shape={"key": required(S)})
    async def image_logs(self, conn: Connection, args: dict) -> dict:
        return await image_rpc.image_logs(self.server, conn, args)

    def containers_of(self, app: App) -> list:
        return [c for p in self.server.scheduler.pools.values() if p.app is app
                for c in p.containers.values() if c.state is not ContainerState.STOPPED]
