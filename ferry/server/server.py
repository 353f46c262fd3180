"""`ferry server`: the control plane process. Wires the parts together and accepts peers."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import signal
import socket as _socket
import time
import traceback
from pathlib import Path
from typing import Any

from .. import __version__, _config
from .._protocol import PROTOCOL_VERSION, UNIX, Address, make_url, read_frame
from .._local_server import LOG_FILE, STATE_FILE, usable_home
from ..exception import AuthError, Error, InvalidError, ServerError
from .access import Role
from .api import API
from .auth import Authenticator, StepCredentials
from .autoscaler import Autoscaler
from .blobs import BlobStore
from .connection import Connection
from .container_rpc import ContainerService
from .containers import ContainerManager
from .images.builder import ImageService
from .journal import Journal
from .gpu_inventory import GPUAllocator
from .gpu_inventory import inventory as gpu_inventory, unplaceable_message
from .logs import LogHub
from .maintenance import Maintenance
from .metrics import Metrics, render
from . import named_objects
from .model import App, AppState, Call, ContainerState, Input, OutputStatus, Pool
from .runtimes import runtime_named
from .sandboxes import SandboxParts, SandboxService
from .gateway import Gateway
from .scheduler import Scheduler
from .schedules import ScheduleRunner
from .secrets import KEY_FILE, SecretStore
from .volume_rpc import VolumeService
from .store import Store
from .tls import TLSFiles, tls_files, wants_tls

log = logging.getLogger("ferry.server")



class Server:
    def __init__(self, home: Path, host: str, port: int, runtime: str) -> None:
        self.home = home
        self.host = host
        self.port = port
        self.started = time.time()
        self.store = Store(home / "state.db")
        self.auth = Authenticator(self.store, home)
        self.tls: TLSFiles | None = tls_files(home, host) if wants_tls(host) else None
        self.control_socket = control_socket_path(home)
        self.blobs = BlobStore(home / "blobs")
        self.secrets = SecretStore(self.store, home / KEY_FILE)
        self.volumes = VolumeService(self)  # volume.* requests; ephemeral volumes of a past run are dropped
        self.runtime = runtime_named(runtime)
        self.runtime_setting = runtime  # FERRY_RUNTIME as given ("auto": chosen by what the host has)
        self.background = False  # started by a client (`--fallback-port`), not by someone in a terminal
        self.metrics = Metrics()  # what /metrics counts (server/metrics.py)
        # the ray runtime's GPUs are its cluster's (runtimes/ray/gpus.py)
        self.gpus = getattr(self.runtime, "gpus", None) or GPUAllocator(gpu_inventory(_config.get("gpus") or None))
        self.images = ImageService(
            home, self.blobs, self.runtime.name, base_dir=_config.get("base_rootfs_dir"),
            ca_bundle=_config.get("build_ca_bundle"), step_timeout=_config.get("image_build_timeout"),
            secrets=self.secrets, step_credentials=StepCredentials(self.auth, asyncio.get_running_loop()),
            metrics=self.metrics,
        )
        self.apps: dict[str, App] = {}
        self.logs = LogHub(self.store)
        self.journal = Journal(self.store)  # inputs and outputs of calls, in group commits
        self.scheduler = Scheduler(wake_autoscaler=lambda pool: self.autoscaler.wake(pool), journal=self.journal)
        # calls reloaded from the journal at start, until their caller resumes them (call id ->
        # the call and the indices the journal held); ephemeral apps reloaded, until their
        # client attaches again; both are dropped after FERRY_RECONNECT_TIMEOUT
        self.restored_calls: dict[str, tuple[Call, set[int]]] = {}
        self.unclaimed_apps: set[str] = set()
        self.containers: ContainerManager  # set in start(), once the port is known
        self.autoscaler: Autoscaler
        self.api = API(self)
        # services answering their own requests: each has handlers() and audiences() (who may
        # send each request: server/access.py)
        self.rpc_services: list[Any] = [self.volumes]
        self.rpc_services += named_objects.services(home / "state.db")  # dict.*, queue.*
        self.rpc_services.append(ContainerService(lambda: self.containers, self.store, self.logs))  # container.*
        self.sandboxes = SandboxService(SandboxParts(  # sandbox.*: ferry.Sandbox (server/sandboxes.py)
            apps=self.apps, runtime=self.runtime, images=self.images, auth=self.auth, gpus=self.gpus, logs=self.logs,
            secrets=self.secrets, containers=lambda: self.containers, prepare=self.prepare_definition))
        self.rpc_services.append(self.sandboxes)
        self.schedules = ScheduleRunner(self)
        self.gateway = Gateway(self)
        self.maintenance = Maintenance(self)  # retention and garbage collection (server/maintenance.py)
        self._stop = asyncio.Event()
        self._shutting_down = False
        self._tcp: asyncio.base_events.Server | None = None
        self._unix: asyncio.base_events.Server | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return make_url(host, self.port, tls=self.tls is not None)

    def metrics_text(self) -> str:
        """The Prometheus exposition of this server (the gateway's `/metrics`)."""
        return render(self.metrics, pools=self.scheduler.pools.values(), apps=self.apps.values(),
                      volumes=self.store.volumes(), info={"version": __version__, "runtime": self.runtime.name})

    @property
    def control_url(self) -> str:
        """The Unix socket address containers on this machine connect to."""
        return str(Address(UNIX, path=str(self.control_socket)))

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        self.auth.ensure_local_admin()
        await self.runtime.open()  # the ray runtime connects to its cluster (a failure stops the start)
        context = self.tls.server_context() if self.tls is not None else None
        try:
            self._tcp = await asyncio.start_server(self._accept, self.host, self.port, limit=1 << 26,
                                                   ssl=context)
        except OSError as exc:
            raise ListenFailed(self.host, self.port, exc) from None
        self.port = self._tcp.sockets[0].getsockname()[1]
        self._unix = await self._listen_unix()
        await self.gateway.start(self.host)
        # sandbox containers get the Unix socket bound in (runtimes/sandbox); others use its path
        container_url = self.url if self.runtime.name == "sandbox" else self.control_url
        if self.runtime.name == "ray":  # containers on other nodes: an address they can reach
            container_url = _config.get("advertise_url") or self.url
            self.runtime.tls_fingerprint = self.tls.fingerprint if self.tls is not None else None  # type: ignore[attr-defined]
            self.runtime.read_blob = self.blobs.get  # type: ignore[attr-defined]  # image files for its nodes
            self.runtime.build_timeout = _config.get("image_build_timeout")  # type: ignore[attr-defined]
            if _config.get("node_runtime") != "process":  # sandbox nodes: layers built here (ray/node_layers.py)
                from .runtimes.ray.node_layers import sandbox_images

                self.runtime.sandboxes = sandbox_images(  # type: ignore[attr-defined]
                    self.images.store, self.blobs, StepCredentials(self.auth, asyncio.get_running_loop()))
            self.images.node_builds = self.runtime.build_image  # type: ignore[attr-defined]  # images on its nodes at app start
        self.containers = ContainerManager(
            server_url=container_url, runtime=self.runtime, store=self.store,
            scheduler=self.scheduler, logs=self.logs,
            wake_autoscaler=lambda pool: self.autoscaler.wake(pool), secrets=self.secrets,
            images=self.images, gpus=self.gpus, auth=self.auth, control_socket=self.control_socket,
        )
        self.autoscaler = Autoscaler(self.scheduler, self.containers, self.logs)
        self._restore()
        self.gateway.refresh()
        self._autoscaler_task = asyncio.create_task(self.autoscaler.run())
        self.schedules.start()
        self.maintenance.start()
        (self.home / STATE_FILE).write_text(json.dumps({
            "url": self.url, "pid": os.getpid(), "web_url": self.gateway.base_url,
            "socket": str(self.control_socket), "runtime": self.runtime.name, "runtime_setting": self.runtime_setting,
            "background": self.background,
            "tls_fingerprint": self.tls.fingerprint if self.tls is not None else None}))
        log.warning("Ferry server listening on %s (state in %s)", self.url, self.home)

    async def _listen_unix(self) -> asyncio.base_events.Server:
        """The Unix socket for containers on this machine. Anyone who can reach the socket file
        may connect (sandboxes run as unprivileged ids); the hello's credential decides the rest."""
        path = self.control_socket
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_socket() or path.exists():
            path.unlink()
        server = await asyncio.start_unix_server(self._accept, str(path), limit=1 << 26)
        os.chmod(path, 0o666)
        return server

    def request_stop(self) -> None:
        self._stop.set()

    async def serve_forever(self) -> None:
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self._stop.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        self._shutting_down = True  # apps stay as they are in the store (deployed ones come back)
        # what the journal holds stays as it is: outputs of containers stopped now (or calls
        # whose callers drop now) must not replace what the next start resumes
        self.journal.flush()
        self.scheduler.journal = None
        for listener in (self._tcp, self._unix):
            if listener is not None:
                listener.close()
        self.maintenance.stop()
        self.schedules.stop()  # no new scheduled runs, and none recorded, while containers stop
        await self.gateway.stop()  # no new requests; those in flight get up to 3 s
        self.images.shutdown()  # image builds in progress are killed, not waited for
        await self.sandboxes.stop_all()
        live = [c for c in self.containers.containers.values() if c.state is not ContainerState.STOPPED]
        await self.containers.stop_all(live, timeout=5.0)
        await self.runtime.close()
        self._autoscaler_task.cancel()
        state = self.home / STATE_FILE
        try:
            if json.loads(state.read_text()).get("pid") == os.getpid():
                state.unlink()
        except (OSError, ValueError):
            pass
        self.store.close()

    def _restore(self) -> None:
        """Bring back deployed apps, ephemeral apps (until FERRY_RECONNECT_TIMEOUT, for their
        clients to attach again), unfinished spawned calls and the journal's calls."""
        self.store.mark_orphaned_containers()
        self.scheduler.restored_attempts = self.store.input_attempts()
        for row in self.store.apps():
            if row["state"] not in ("deployed", "running"):
                continue
            if row["state"] == "running":  # an ephemeral app whose server went away
                app = App(id=row["id"], name=row["name"], state=AppState.RUNNING, created=row["created"])
                self.unclaimed_apps.add(app.id)
            else:
                app = App(id=row["id"], name=row["name"], state=AppState.DEPLOYED, created=row["created"])
            self.apps[app.id] = app
            for function_id, tag, definition in self.store.functions(app.id):
                app.objects[tag] = function_id
                self.install_function(app, function_id, tag, definition, persist=False)
        for pool_id, base_id, params, overrides in self.store.derived():
            base = self.scheduler.pools.get(base_id)
            if base is not None:  # (bases come before what derives from them)
                self.derive_pool(pool_id, base, params=params, config_overrides=overrides, persist=False)
        for function_id, settings in self.store.autoscaler_overrides().items():  # update_autoscaler()
            pool = self.scheduler.pools.get(function_id)
            if pool is not None:
                pool.overrides.update(settings)
        for call_id, function_id, method, args in self.store.pending_spawned():
            pool = self.scheduler.pools.get(function_id)
            if pool is None:
                self.store.finish_spawned(call_id, {
                    "status": OutputStatus.STOPPED.value, "idx": 0,
                    "msg": "The app of this call was not deployed when the server restarted, "
                           "so the call was dropped. Deploy the app to keep spawned calls.",
                })
                continue
            self.start_spawned(call_id, pool, args, method)
        self._restore_calls()
        if self.unclaimed_apps or self.restored_calls or self.scheduler.restored_attempts:
            asyncio.get_running_loop().call_later(_config.get("reconnect_timeout"), self._expire_restored)

    def _restore_calls(self) -> None:
        """Calls of the journal: inputs without an output go back to their queues (those that
        were running when the server went away run again, as the same attempt); outputs wait
        for their caller (`call.resume`)."""
        rows: dict[str, list[tuple]] = {}
        for call_id, function_id, kind, idx, method, args, output in self.store.journaled_calls():
            rows.setdefault(call_id, []).append((function_id, kind, idx, method, args, output))
        for call_id, inputs in rows.items():
            function_id, kind = inputs[0][0], inputs[0][1]
            pool = self.scheduler.pools.get(function_id)
            if pool is None or not pool.app.live:
                self.journal.drop(call_id)
                continue
            call = Call(id=call_id, pool=pool, kind=kind, deliver=_hold, closed=kind == "remote", durable=True)
            call.held = {idx: output for _, _, idx, _, _, output in inputs if output is not None}
            queued = [(idx, args, method) for _, _, idx, method, args, output in inputs if output is None]
            self.scheduler.open_call(call)
            if queued:
                self.scheduler.submit(call, queued, journaled=True)
            self.restored_calls[call_id] = (call, {entry[2] for entry in inputs})
        if rows:
            log.warning("resumed %d call(s) with %d input(s) from the journal", len(rows),
                        sum(len(inputs) for inputs in rows.values()))

    def _expire_restored(self) -> None:
        """FERRY_RECONNECT_TIMEOUT after the start: calls whose caller did not resume them are
        cancelled, ephemeral apps whose client did not attach are stopped."""
        for call, _ in list(self.restored_calls.values()):
            self.cancel_call(call)
        self.restored_calls.clear()
        # failures of inputs whose caller did not send them again
        self.store.forget_input_attempts(list(self.scheduler.restored_attempts))
        self.scheduler.restored_attempts.clear()
        for app_id in list(self.unclaimed_apps):
            app = self.apps.get(app_id)
            if app is not None and app.owner is None:
                asyncio.ensure_future(self.stop_app(app, "its client did not come back after the server restarted"))
        self.unclaimed_apps.clear()

    # -- apps and functions ---------------------------------------------------------------
    def install_function(self, app: App, function_id: str, tag: str, definition: dict,
                         *, persist: bool = True) -> None:
        if app.state is AppState.DEPLOYED:  # first: a bad schedule fails before anything is stored
            self.schedules.on_install(app, function_id, definition, redeploy=persist)
        if persist and app.live:  # ephemeral apps too: their calls survive a restart of the server
            self.store.upsert_function(function_id, app.id, tag, definition)
        pool = self.scheduler.pools.get(function_id)
        if pool is None:
            pool = Pool(function_id=function_id, app=app, tag=tag, definition=definition)
            pool.stats.series = self.metrics.series(app.name, tag)
            self.scheduler.pools[function_id] = pool
            return
        pool.overrides.clear()  # a (re)deploy resets update_autoscaler() to the decorator's settings
        for affected in self._pools_of(function_id):
            self.store.set_autoscaler_overrides(affected.function_id, {})
        if pool.definition != definition:  # redeploy: new containers run the new code
            pool.definition = definition
            for derived in self._pools_of(function_id):
                base = self.scheduler.pools.get(derived.base_id or "")
                if base is not None:
                    derived.definition = derived.derive_definition(base.definition)
                for container in list(derived.containers.values()):
                    self.containers.shutdown(container, "replaced by a new deployment")

    def check_placeable(self, tag: str, definition: dict[str, Any]) -> str | None:
        """Raise if the runtime cannot run `definition` (runtimes: check_function), or if it asks
        for GPUs that this cluster can never provide. On a Ray cluster, whose nodes come and go,
        such a request only warns (the warning is returned, for the client to show): its calls
        fail fast until a node with that GPU joins."""
        self.runtime.check_function(tag, definition)
        config = definition.get("config", {})
        unmeetable = self.runtime.unmeetable(config.get("cpu"), config.get("memory"))
        if unmeetable is not None:  # (only a Ray cluster can tell, and its nodes come and go)
            warning = f"{tag}: {unmeetable}"
            log.warning("%s", warning)
            return warning
        data = config.get("gpu")
        if not data:
            return None
        from .._gpu import GPURequest

        request = GPURequest.from_dict(data)
        if not self.gpus.satisfiable(request):
            message = unplaceable_message(tag, request, self.gpus.describe())
            if self.runtime.name == "ray":
                warning = f"{message} (its calls fail until a node with such a GPU joins the Ray cluster)"
                log.warning("%s", warning)
                return warning
            raise InvalidError(message)
        return None

    async def prepare_definition(self, tag: str, definition: dict[str, Any], conn: Connection,
                                 progress_id: str | None = None) -> dict[str, Any]:
        """A function-like definition (a sandbox's) ready to start, as `app.create` makes each
        function's: secrets and volumes resolved (a missing one fails, naming it), placement
        checked, image built (progress pushed to `conn` as `image` pushes of `progress_id`)."""
        from .images import rpc as image_rpc

        specs = self.api._resolve_secrets([{"tag": tag, "definition": definition}])
        specs = self.volumes.resolve_functions(specs)
        self.check_placeable(tag, specs[0]["definition"])
        specs = await image_rpc.build_functions(self, specs, conn, progress_id)
        return specs[0]["definition"]

    def derive_pool(self, pool_id: str, base: Pool, *, params: bytes | None,
                    config_overrides: dict[str, Any], persist: bool = True) -> Pool:
        """A pool running `base`'s code for one class instance (`params`) or with some
        options changed (`config_overrides`); kept across restarts for deployed apps."""
        pool = self.scheduler.pools.get(pool_id)
        if pool is not None:
            return pool
        pool = Pool(function_id=pool_id, app=base.app, tag=base.tag, definition=base.definition,
                    params=params, overrides=base.overrides, base_id=base.function_id,
                    config_overrides=config_overrides)
        pool.definition = pool.derive_definition(base.definition)
        pool.stats.series = base.stats.series  # counted with its function
        self.scheduler.pools[pool_id] = pool
        if persist and base.app.live:
            self.store.upsert_derived(pool_id, base.function_id, params, config_overrides)
        return pool

    def _pools_of(self, function_id: str) -> list[Pool]:
        """The pool of `function_id` and every pool derived from it, directly or not."""
        found = [p for p in self.scheduler.pools.values() if p.function_id == function_id]
        for pool in list(self.scheduler.pools.values()):
            if pool.base_id == function_id:
                found.extend(self._pools_of(pool.function_id))
        return found

    def remove_function(self, function_id: str) -> None:
        self.schedules.forget(function_id)
        for pool in self._pools_of(function_id):
            for container in list(pool.containers.values()):
                self.containers.shutdown(container, "function removed")
            self.scheduler.fail_queued(pool, {"status": OutputStatus.STOPPED.value,
                                              "msg": f"{pool.tag} was removed from its app."})
            self.scheduler.pools.pop(pool.function_id, None)
        self.gateway.refresh()

    async def stop_app(self, app: App, reason: str) -> None:
        if not app.live or self._shutting_down:  # (clients disconnecting as the server stops)
            return
        ephemeral = app.state is AppState.RUNNING
        app.state = AppState.STOPPED
        self.store.set_app_state(app.id, "stopped")
        if ephemeral:  # its definitions were kept for a restart of the server only
            self.store.delete_app_definitions(app.id)
        self.gateway.refresh()  # its endpoints stop answering now (or fall back to an older app)
        for function_id in app.objects.values():
            self.schedules.forget(function_id)
        self.sandboxes.stop_app(app, reason)
        pools = [p for p in self.scheduler.pools.values() if p.app is app]
        containers = [c for p in pools for c in p.containers.values()]
        for pool in pools:
            self.scheduler.fail_queued(pool, {"status": OutputStatus.STOPPED.value,
                                              "msg": f"App {app.name!r} stopped ({reason})."})
        await self.containers.stop_all(containers)
        for pool in pools:
            self.scheduler.pools.pop(pool.function_id, None)
        self.logs.flush()
        self.maintenance.drop_unused_secrets()  # secrets given by value to its functions

    def cancel_call(self, call: Call) -> None:
        for container in self.scheduler.cancel(call):
            self.containers.kill(container, "its input was cancelled")

    def start_spawned(self, call_id: str, pool: Pool, args: dict, method: str | None) -> None:
        def deliver(entry: Input, item: dict[str, Any]) -> None:
            if item["status"] != OutputStatus.ITEM.value:
                self.api.spawned_finished(call_id, item)

        call = Call(id=call_id, pool=pool, kind="spawn", deliver=deliver, closed=True)
        self.scheduler.open_call(call)
        self.scheduler.submit(call, [(0, args, method)])

    # -- connections ----------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Authenticate a new peer by its hello, then serve it the requests its role allows."""
        sock = writer.get_extra_info("socket")
        peer = "unix"
        if sock is not None and sock.family != _socket.AF_UNIX:
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            peer = str((writer.get_extra_info("peername") or ("?",))[0])
        conn = Connection(reader, writer)
        try:
            hello = await asyncio.wait_for(read_frame(reader), timeout=10)
        except Exception:
            conn.close()
            return
        if not isinstance(hello, dict) or hello.get("t") != "hello" or hello.get("v") != PROTOCOL_VERSION:
            version = hello.get("v") if isinstance(hello, dict) else None
            conn.send({"t": "refused", "msg": (
                f"This server speaks Ferry protocol v{PROTOCOL_VERSION}; the peer sent "
                f"{version!r}. Upgrade the older side.")})
            conn.close()
            return
        role = hello.get("role")
        if role not in ("client", "container"):
            conn.send({"t": "refused", "msg": f"Unknown role {role!r}: expected client or container."})
            conn.close()
            return
        try:
            principal = await self.auth.authenticate(hello, peer)
        except AuthError as exc:
            conn.send({"t": "refused", "auth": True, "msg": str(exc)})
            conn.close()
            return
        if role == "container" and principal.role is not Role.CONTAINER:
            conn.send({"t": "refused", "msg": "Only a container may connect as one."})
            conn.close()
            return
        conn.principal = principal
        self.auth.track(principal, conn, conn.on_close)
        if role == "client":
            conn.role = "client"
            conn.peer_id = principal.credential_id
            conn.send({"t": "welcome", "v": PROTOCOL_VERSION, "server": self.url, "role": principal.role.value})
            await conn.serve(self.api.handlers(principal.role), self._on_client_push)
        else:
            await self._serve_container(conn, hello)

    def _on_client_push(self, conn: Connection, frame: dict) -> None:
        kind = frame.get("k")
        if kind == "map.inputs":
            self.api.on_map_inputs(conn, frame)
        elif kind == "call.ack":
            self.api.on_call_ack(conn, frame)

    async def _serve_container(self, conn: Connection, hello: dict) -> None:
        container = self.containers.containers.get(conn.principal.credential_id)
        if container is None or container.state is ContainerState.STOPPED or container.conn is not None:
            conn.send({"t": "refused", "msg": "Unknown or already connected container."})
            conn.close()
            return
        conn.role = "container"
        conn.peer_id = container.id
        container.conn = conn
        conn.send({"t": "welcome", "v": PROTOCOL_VERSION, **self.containers.welcome(container)})

        def on_push(conn: Connection, frame: dict) -> None:
            kind = frame.get("k")
            if kind == "outputs":
                self.scheduler.on_outputs(container, frame["items"])
            elif kind == "log":
                pool = container.pool
                if frame["stream"] == "stderr":  # what Python printed there names a crash's cause
                    container.stderr_tail.extend(frame["text"].splitlines()[-40:])
                self.logs.add(pool.app.id, pool.tag, container.id, frame["stream"], frame["text"])
            elif kind == "ready":
                self.containers.on_ready(container, frame["enter"])
            elif kind == "init_failed":
                self.containers.on_init_failed(container, frame["exc"])
            elif kind == "requeue":
                self.scheduler.requeue(container, list(frame["ids"]))
            elif kind == "stop_fetching":  # modal.experimental.stop_fetching_inputs()
                self.containers.shutdown(container, "stop_fetching_inputs() was called")
            elif kind == "timeout":
                container.stop_reason = frame["msg"]

        await conn.serve(self.api.handlers(Role.CONTAINER), on_push)


def control_socket_path(home: Path) -> Path:
    """`$FERRY_HOME/run/control.sock`, or a short path under the temporary directory when
    FERRY_HOME is too long for a Unix socket address (about 100 bytes)."""
    path = home / "run" / "control.sock"
    if len(str(path)) <= 100:
        return path
    import hashlib
    import tempfile

    digest = hashlib.sha256(str(home).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"ferry-{digest}" / "control.sock"


async def _main(home: Path, host: str, port: int, runtime: str, background: bool = False) -> None:
    server = Server(home, host, port, runtime)
    server.background = background
    await server.serve_forever()


def run(*, host: str | None = None, port: int | None = None, fallback_port: bool = False,
        ray_address: str | None = None) -> None:
    """Run the control plane in the foreground until SIGTERM/SIGINT.

    Every failure raises a Ferry error whose message gives the cause in one line; the
    traceback of an unexpected one is appended to `$FERRY_HOME/server.log`, and only there.
    `fallback_port`: when the default port (neither `port` nor FERRY_PORT given) is taken,
    listen on a free one instead. `ray_address`: FERRY_RAY_ADDRESS, and the `ray` runtime unless
    FERRY_RUNTIME names another."""
    home: Path | None = None
    if ray_address is not None:  # (this process is the server: its settings are its environment)
        os.environ["FERRY_RAY_ADDRESS"] = ray_address
        os.environ.setdefault("FERRY_RUNTIME", "ray")
    try:
        level = _config.get("log_level").upper()
        if not isinstance(logging.getLevelName(level), int):
            raise InvalidError(f"FERRY_LOG_LEVEL={level!r} is invalid: use DEBUG, INFO, WARNING or ERROR.")
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        home = usable_home()
        runtime = _config.get("runtime")
        runtime_named(runtime)  # fail fast on a bad setting
        try:
            import uvloop  # type: ignore[import-not-found]

            uvloop.install()
        except ImportError:
            pass
        port_name = "FERRY_PORT" if port is None else "--port"
        explicit_port = port is not None or _config.is_set("port")
        host = _config.get("host") if host is None else host
        port = _config.get("port") if port is None else port
        for name, value in ((port_name, port), ("FERRY_WEB_PORT", _config.get("web_port"))):
            if not 0 <= value <= 65535:
                raise InvalidError(f"{name}={value} is not a port: use 1-65535, or 0 to pick a free one.")
        try:
            asyncio.run(_main(home, host, port, runtime, fallback_port))
        except ListenFailed as failed:
            if not fallback_port or explicit_port or port == 0:
                raise InvalidError(str(failed)) from None
            log.warning("%s; listening on a free port instead", failed)
            asyncio.run(_main(home, host, 0, runtime, fallback_port))
    except (Error, NotImplementedError):
        raise
    except Exception as exc:  # noqa: BLE001 - reported in one line, the traceback goes to the log
        where = _record_traceback(home, exc)
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ServerError(f"The server stopped on an internal error: {type(exc).__name__}: {first}"
                          + (f" (traceback in {where})" if where else "")) from None


class ListenFailed(Exception):
    """The control plane could not listen on its address (run() decides what to do)."""

    def __init__(self, host: str, port: int, cause: OSError) -> None:
        why = "the port is taken" if cause.errno == errno.EADDRINUSE else (cause.strerror or str(cause))
        super().__init__(f"The control plane cannot listen on {host}:{port} ({why}). Set FERRY_PORT "
                         "(or --port) to a free port (0 picks one), or stop what is using it.")


def _record_traceback(home: Path | None, exc: BaseException) -> Path | None:
    """Append `exc`'s traceback to the server's log file; return the file's path, if written."""
    if home is None:
        return None
    path = home / LOG_FILE
    try:
        with open(path, "a") as handle:
            handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} ERROR ferry.server: the server stopped\n"
                         + "".join(traceback.format_exception(exc)))
    except OSError:
        return None
    return path


def _hold(entry: Input, item: dict[str, Any]) -> None:
    """Where the outputs of a call reloaded from the journal go until its caller resumes it."""
    entry.call.held[entry.idx] = item
