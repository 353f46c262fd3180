"""The `sandbox.*` requests of wire API v1: `ferry.Sandbox` (docs/sandboxes.md).

A sandbox is a container of an app whose main process is a small supervisor
(`python -m ferry._container.sandbox`), started through the same runtime, image, secrets,
volumes and limits as function containers. The supervisor connects back with the container's
own credential, runs the sandbox's entrypoint (if any) and the commands of `exec`, and streams
their output here; this service forwards it to the client that asked for it.

    STARTING --supervisor attached--> RUNNING --entrypoint exits--> FINISHED
         \\______________ terminate() / timeout / crash ______________/ TERMINATED | TIMEOUT | FAILED

Who may send what: administrators and containers create and use sandboxes; a container only
those of its own app (a function's app, or the app of the sandbox it runs in). The requests a
supervisor sends (`sandbox.attach`, `.started`, `.io`, `.exited`) are for containers only, and
only from the sandbox's own credential.

Sandboxes live in the server's memory: a restart of the server ends them (their processes end
with it), as it ends the containers of ephemeral apps.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from ..exception import ExecutionError, InvalidError, NotFoundError, PermissionDeniedError
from .access import ADMIN_ONLY, EVERYONE, Principal, Role
from .connection import Connection
from .model import App
from .runtimes import ContainerSpec, ExitStatus
from .shapes import Shape, optional, required

if TYPE_CHECKING:
    from .auth import Authenticator
    from .containers import ContainerManager
    from .gpu_inventory import GPUAllocator
    from .images.builder import ImageService
    from .logs import LogHub
    from .runtimes import ContainerHandle, Runtime
    from .secrets import SecretStore

log = logging.getLogger("ferry.server")

Handler = Callable[[Connection, dict[str, Any]], Awaitable[Any]]
SUPERVISOR_ONLY: frozenset[Role] = frozenset({Role.CONTAINER})
SUPERVISOR_MODULE = "ferry._container.sandbox"
DEFAULT_TIMEOUT = 300          # seconds, as on the hosted platform
MAX_TIMEOUT = 24 * 3600
KILL_GRACE = 5.0               # after terminate(), SIGKILL if still alive
OUTPUT_KEPT = 16 * 1024 * 1024  # bytes of the entrypoint's output kept for late readers (from_id)
ENDED_KEPT = 1000              # finished sandboxes kept for from_id / wait / list


class SandboxState(str, enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    FINISHED = "finished"        # the entrypoint exited (returncode: its exit code)
    TERMINATED = "terminated"    # terminate() (returncode 137)
    TIMEOUT = "timeout"          # its timeout passed (returncode 124)
    FAILED = "failed"            # its container could not start or died (returncode: how it ended)

    @property
    def ended(self) -> bool:
        return self not in (SandboxState.STARTING, SandboxState.RUNNING)


@dataclass(eq=False)
class Exec:
    """A command running in a sandbox (`exec`), the sandbox's entrypoint (id = the sandbox's),
    or a command run in a function's container (`ferry container exec`: `host` is that
    container's connection)."""

    id: str
    owner: Connection | None
    started: asyncio.Future
    returncode: int | None = None
    host: Connection | None = None


@dataclass(eq=False)
class Sandbox:
    id: str
    container_id: str
    app: App
    entrypoint: list[str]
    workdir: str | None
    timeout: float
    tags: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    mount: dict[str, Any] | None = None  # source code on its commands' PYTHONPATH (`ferry shell`)
    created: float = field(default_factory=time.time)
    state: SandboxState = SandboxState.STARTING
    returncode: int | None = None
    reason: str = ""
    handle: "ContainerHandle | None" = None
    supervisor: Connection | None = None
    attached: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    execs: dict[str, Exec] = field(default_factory=dict)
    output: list[tuple[int, bytes]] = field(default_factory=list)  # the entrypoint's, for late readers
    output_bytes: int = 0
    readers: set[Connection] = field(default_factory=set)           # connections reading the entrypoint
    gpu: tuple[str, list[int]] | None = None
    timer: asyncio.TimerHandle | None = None
    detached: asyncio.Event = field(default_factory=asyncio.Event)  # the supervisor's connection closed
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))  # the supervisor's own

    def row(self) -> dict[str, Any]:
        return {"id": self.id, "app_id": self.app.id, "app_name": self.app.name, "name": self.name,
                "tags": dict(self.tags), "created": self.created, "state": self.state.value,
                "returncode": self.returncode, "reason": self.reason, "container_id": self.container_id}


def _size(value: Any) -> list[int] | None:
    """A terminal's size: [rows, columns]."""
    if value is None:
        return None
    if len(value) != 2 or not all(isinstance(v, int) and 1 <= v <= 65535 for v in value):
        raise InvalidError(f"size takes [rows, columns] of a terminal, got {value!r}.")
    return list(value)


def _path(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not value.startswith("/") or "\0" in value:
        raise InvalidError(f"{what} takes an absolute path, e.g. '/root/work'; got {value!r}.")
    return value


def _tags(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidError("Sandbox tags must be a dict of strings to strings, e.g. {'user': 'ada'}.")
    return dict(value)


@dataclass
class SandboxParts:
    """What of the server sandboxes use (server.py wires them)."""

    apps: dict[str, App]
    runtime: "Runtime"
    images: "ImageService"
    auth: "Authenticator"
    gpus: "GPUAllocator"
    logs: "LogHub"
    secrets: "SecretStore"
    containers: Callable[[], "ContainerManager"]  # (made when the server starts listening)
    # a function-like definition ready to start: secrets and volumes resolved, placement
    # checked, image built (as app.create does for a function): (tag, definition, conn,
    # progress_id: where the build's progress goes)
    prepare: Callable[[str, dict, Connection, str | None], Awaitable[dict]]


class SandboxService:
    """Sandboxes of this server: their containers, their processes and who reads them."""

    def __init__(self, parts: SandboxParts) -> None:
        self._parts = parts
        self.sandboxes: dict[str, Sandbox] = {}
        self._by_container: dict[str, Sandbox] = {}
        self._container_execs: dict[str, Exec] = {}  # `ferry container exec` commands, by exec id

    # -- registration (server/api.py builds the tables) -------------------------------------
    def handlers(self) -> dict[str, Handler]:
        handlers = {f"sandbox.{name}": getattr(self, name) for name in (
            "create", "exec", "stdin", "resize", "wait", "terminate", "get", "list", "set_tags",
            "attach", "started", "io", "exited")}
        return {**handlers, "container.exec": self.container_exec, "container.stdin": self.container_stdin,
                "container.resize": self.container_resize}

    @staticmethod
    def shapes() -> dict[str, Shape]:
        ref = {"sandbox_id": required(str)}
        return {
            "sandbox.create": {"app_id": optional(str), "entrypoint": optional(list, items=str),
                               "definition": required(dict), "workdir": optional(str), "timeout": optional(int, float),
                               "tags": optional(dict), "name": optional(str), "progress_id": optional(str)},
            "sandbox.exec": {**ref, "exec_id": required(str), "argv": required(list, items=str), "workdir": optional(str),
                             "env": optional(dict), "pty": optional(bool), "timeout": optional(int, float),
                             "stdout": optional(str), "stderr": optional(str), "size": optional(list, items=int)},
            "sandbox.stdin": {**ref, "exec_id": required(str), "data": optional(bytes), "eof": optional(bool)},
            "sandbox.resize": {**ref, "exec_id": required(str), "size": required(list, items=int)},
            "sandbox.wait": {**ref, "timeout": optional(int, float)},
            "sandbox.terminate": ref,
            "sandbox.get": {**ref, "read_output": optional(bool)},
            "sandbox.list": {"app_id": optional(str), "tags": optional(dict), "all": optional(bool)},
            "sandbox.set_tags": {**ref, "tags": required(dict)},
            "sandbox.attach": {},
            "sandbox.started": {"exec_id": required(str), "error": optional(str)},
            "sandbox.io": {"exec_id": required(str), "fd": required(int), "data": required(bytes)},
            "sandbox.exited": {"exec_id": required(str), "code": required(int)},
            "container.exec": {"container_id": required(str), "exec_id": required(str),
                               "argv": required(list, items=str), "pty": optional(bool), "size": optional(list, items=int),
                               "workdir": optional(str), "env": optional(dict)},
            "container.stdin": {"exec_id": required(str), "data": optional(bytes), "eof": optional(bool)},
            "container.resize": {"exec_id": required(str), "size": required(list, items=int)},
        }

    @staticmethod
    def audiences() -> dict[str, frozenset[Role]]:
        """Administrators and containers use sandboxes (a container those of its own app,
        checked per request); the supervisor's own requests are for its container only."""
        audiences = {f"sandbox.{name}": EVERYONE for name in (
            "create", "exec", "stdin", "resize", "wait", "terminate", "get", "list", "set_tags")}
        return {**audiences, **{f"sandbox.{name}": SUPERVISOR_ONLY for name in ("attach", "started", "io", "exited")},
                "container.exec": ADMIN_ONLY, "container.stdin": ADMIN_ONLY, "container.resize": ADMIN_ONLY}

    # -- who may touch what ------------------------------------------------------------------
    def _app_of(self, principal: Principal) -> App | None:
        """The app a container credential belongs to (a function's, or a sandbox's)."""
        sandbox = self._by_container.get(principal.credential_id)
        if sandbox is not None:
            return sandbox.app
        container = self._parts.containers().containers.get(principal.credential_id)
        return container.pool.app if container is not None else None

    def _own_app(self, conn: Connection) -> App | None:
        """None for an administrator (every app); a container's own app otherwise."""
        if conn.principal.role is Role.ADMIN:
            return None
        app = self._app_of(conn.principal)
        if app is None:
            raise PermissionDeniedError("Only the containers of an app may use its sandboxes; this credential "
                                        "belongs to no app.")
        return app

    def _sandbox(self, conn: Connection, sandbox_id: str) -> Sandbox:
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox is None:
            raise NotFoundError(f"No sandbox {sandbox_id!r} (it may have ended long ago). See `ferry sandbox list`.")
        own = self._own_app(conn)
        if own is not None and sandbox.app is not own:
            raise PermissionDeniedError(f"Sandbox {sandbox_id} belongs to another app: a container may only use "
                                        "the sandboxes of its own app.")
        return sandbox

    def _resolve_app(self, conn: Connection, app_id: str | None) -> App:
        own = self._own_app(conn)
        if app_id is None:
            if own is None:
                raise InvalidError("Sandbox.create() outside a container needs app=: pass a running app "
                                   "(inside `with app.run():`) or ferry.App.lookup('name', create_if_missing=True).")
            return own
        app = self._parts.apps.get(app_id)
        if app is None:
            raise NotFoundError(f"No app {app_id!r}: is it still running? See `ferry app list`.")
        if own is not None and app is not own:
            raise PermissionDeniedError("A container may only create sandboxes in its own app.")
        if not app.live:
            raise InvalidError(f"App {app.name!r} is stopped: run or deploy it again, or use App.lookup.")
        return app

    # -- creating ----------------------------------------------------------------------------
    async def create(self, conn: Connection, args: dict) -> dict:
        """Start a sandbox: build its image, start its container; answers once it is starting
        (the first `exec` waits until its supervisor is connected)."""
        parts = self._parts
        app = self._resolve_app(conn, args.get("app_id"))
        timeout = args.get("timeout")
        timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        if isinstance(timeout, bool) or not 1 <= timeout <= MAX_TIMEOUT:
            raise InvalidError(f"Sandbox timeout must be between 1 and {MAX_TIMEOUT} seconds (24 h), got {timeout}.")
        tags = _tags(args.get("tags") or {})
        workdir = _path(args.get("workdir"), "workdir")
        sandbox_id = "sb-" + secrets.token_hex(8)
        definition = await parts.prepare(sandbox_id, args["definition"], conn, args.get("progress_id"))
        config = definition.get("config") or {}
        gpu = None
        if config.get("gpu"):
            from .._gpu import GPURequest

            gpu = parts.gpus.allocate(GPURequest.from_dict(config["gpu"]))
            if gpu is None:
                raise ExecutionError("The GPUs this sandbox asks for are all in use by other containers; "
                                     "try again when one ends.")
        sandbox = Sandbox(id=sandbox_id, container_id="ct-" + secrets.token_hex(6), app=app,
                          entrypoint=list(args.get("entrypoint") or []), workdir=workdir,
                          timeout=float(timeout), tags=tags, name=args.get("name"), gpu=gpu,
                          mount=definition.get("mount"))
        self.sandboxes[sandbox.id] = sandbox
        self._by_container[sandbox.container_id] = sandbox
        try:
            spec = await self._spec(sandbox, definition)
            parts.runtime.check(spec)
            sandbox.handle = await parts.runtime.start(spec, self._log_sink(sandbox))
        except BaseException as exc:
            self._ended(sandbox, ExitStatus(code=None), SandboxState.FAILED, f"{type(exc).__name__}: {exc}")
            raise
        sandbox.timer = asyncio.get_running_loop().call_later(sandbox.timeout, self._expire, sandbox)
        asyncio.create_task(self._watch(sandbox))
        return {"sandbox_id": sandbox.id}

    async def _spec(self, sandbox: Sandbox, definition: dict) -> ContainerSpec:
        parts, containers = self._parts, self._parts.containers()
        config = definition.get("config") or {}
        env = {key: value for key, value in (definition.get("env") or {}).items() if value is not None}
        if config.get("secrets"):
            env.update(parts.secrets.environment(config["secrets"], f"sandbox {sandbox.id}"))
        env["FERRY_CONTAINER_SECRET"] = parts.auth.container_secret(sandbox.container_id)
        env["FERRY_SANDBOX_ID"] = sandbox.id
        gpu_type, gpu_indices = sandbox.gpu or (None, [])
        spec = ContainerSpec(
            container_id=sandbox.container_id, function_id=sandbox.id, server_url=containers.server_url, env=env,
            cpu=config.get("cpu"), memory_mb=config.get("memory"), gpu_type=gpu_type,
            gpu_indices=tuple(gpu_indices), volumes=tuple(config.get("volumes") or ()),
            control_socket=containers.control_socket, block_network=bool(config.get("block_network")),
            entry_module=SUPERVISOR_MODULE)
        return await parts.images.complete_spec(spec, definition)

    def _log_sink(self, sandbox: Sandbox) -> Callable[[str, str], None]:
        """The supervisor's own output (not its processes'), kept with the app's logs; the last
        lines of its stderr say why a sandbox that failed did."""
        logs = self._parts.logs

        def sink(stream: str, text: str) -> None:
            if stream == "stderr":
                sandbox.stderr_tail.extend(text.splitlines()[-20:])
            logs.add(sandbox.app.id, sandbox.id, sandbox.container_id, stream, text)

        return sink

    async def _watch(self, sandbox: Sandbox) -> None:
        assert sandbox.handle is not None
        status = await sandbox.handle.wait()
        if sandbox.supervisor is not None:  # what it sent before it exited is handled first
            try:
                await asyncio.wait_for(sandbox.detached.wait(), 2.0)
            except asyncio.TimeoutError:
                pass
            await asyncio.sleep(0)
        self._ended(sandbox, status)

    # -- ending ------------------------------------------------------------------------------
    def _expire(self, sandbox: Sandbox) -> None:
        self.stop(sandbox, SandboxState.TIMEOUT, f"its timeout of {sandbox.timeout:g}s passed")

    def stop(self, sandbox: Sandbox, state: SandboxState, reason: str) -> None:
        """End a sandbox (terminate, timeout, its app stopped): SIGTERM, SIGKILL after a grace."""
        if sandbox.state.ended:
            return
        sandbox.state, sandbox.reason = state, reason
        if sandbox.handle is not None:
            sandbox.handle.terminate()
            handle = sandbox.handle
            asyncio.get_running_loop().call_later(KILL_GRACE, handle.kill)

    def stop_app(self, app: App, reason: str) -> None:
        """The app stopped: so do its sandboxes."""
        for sandbox in list(self.sandboxes.values()):
            if sandbox.app is app:
                self.stop(sandbox, SandboxState.TERMINATED, f"app {app.name!r} stopped ({reason})")

    async def stop_all(self, timeout: float = 5.0) -> None:
        live = [s for s in self.sandboxes.values() if not s.ended.is_set()]
        for sandbox in live:
            self.stop(sandbox, SandboxState.TERMINATED, "the server stopped")
        if live:
            await asyncio.wait([asyncio.ensure_future(s.ended.wait()) for s in live], timeout=timeout)

    def _ended(self, sandbox: Sandbox, status: ExitStatus, state: SandboxState | None = None,
               reason: str = "") -> None:
        if sandbox.ended.is_set():
            return
        if sandbox.timer is not None:
            sandbox.timer.cancel()
        if state is not None:
            sandbox.state, sandbox.reason = state, reason
        elif not sandbox.state.ended:  # it ended by itself: the entrypoint's code, else the container's
            main = sandbox.execs.get(sandbox.id)
            if main is not None and main.returncode is not None:
                sandbox.state = SandboxState.FINISHED
            else:
                tail = "\n".join(sandbox.stderr_tail)
                sandbox.state = SandboxState.FAILED
                sandbox.reason = f"its container {status.describe()}" + (f"; last lines of its stderr:\n{tail}"
                                                                         if tail else "")
        main = sandbox.execs.get(sandbox.id)
        sandbox.returncode = {SandboxState.TIMEOUT: 124, SandboxState.TERMINATED: 137}.get(
            sandbox.state, main.returncode if main is not None and main.returncode is not None else status.code)
        if sandbox.returncode is None:
            sandbox.returncode = -1
        for process in sandbox.execs.values():  # commands still running were killed with it
            if process.returncode is None:
                process.returncode = -9  # (as Python reports a SIGKILL)
                self._exit_push(sandbox, process, -9)
            if not process.started.done():  # (its exec request is answered with this)
                process.started.set_exception(ExecutionError(
                    f"Sandbox {sandbox.id} ended before the command started ({sandbox.state.value}"
                    + (f": {sandbox.reason}" if sandbox.reason else "") + ")."))
        if not sandbox.attached.done():
            sandbox.attached.set_exception(ExecutionError(
                f"Sandbox {sandbox.id} ended before it was ready ({sandbox.reason or sandbox.state.value})."))
            sandbox.attached.exception()  # (read: nobody may be waiting)
        if sandbox.gpu is not None:
            self._parts.gpus.release(sandbox.gpu[1])
            sandbox.gpu = None
        self._parts.auth.forget_container(sandbox.container_id)
        self._by_container.pop(sandbox.container_id, None)
        sandbox.ended.set()
        ended = [s for s in self.sandboxes.values() if s.ended.is_set()]
        for old in ended[:max(0, len(ended) - ENDED_KEPT)]:
            self.sandboxes.pop(old.id, None)

    def _exit_push(self, sandbox: Sandbox, process: Exec, code: int) -> None:
        targets = sandbox.readers if process.id == sandbox.id else {process.owner} if process.owner else set()
        for conn in list(targets):
            conn.push("sandbox.exit", exec_id=process.id, code=code)

    # -- requests of programs ----------------------------------------------------------------
    async def exec(self, conn: Connection, args: dict) -> dict:
        """Start `argv` in the sandbox; its output is pushed to this connection
        (`sandbox.out {exec_id, fd, data}`, then `sandbox.exit {exec_id, code}`)."""
        sandbox = self._sandbox(conn, args["sandbox_id"])
        if not args["argv"]:
            raise InvalidError("Sandbox.exec() needs a command, e.g. sb.exec('ls', '-l').")
        if sandbox.state.ended:
            raise ExecutionError(f"Sandbox {sandbox.id} has ended ({sandbox.state.value}); exec needs a running one.")
        env = args.get("env") or {}
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise InvalidError("exec(env=...) takes a dict of strings to strings.")
        exec_id = args["exec_id"]
        if not exec_id.startswith("ex-") or len(exec_id) > 64 or exec_id in sandbox.execs:
            raise InvalidError(f"Invalid or reused exec id {exec_id!r}.")
        await asyncio.shield(sandbox.attached)
        process = Exec(id=exec_id, owner=conn, started=asyncio.get_running_loop().create_future())
        sandbox.execs[process.id] = process
        assert sandbox.supervisor is not None
        timeout = args.get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not 0 < timeout <= MAX_TIMEOUT):
            raise InvalidError(f"exec timeout must be between 0 and {MAX_TIMEOUT} seconds, got {timeout!r}.")
        streams = {name: args.get(name) or "pipe" for name in ("stdout", "stderr")}
        if not set(streams.values()) <= {"pipe", "devnull"}:
            raise InvalidError(f"stdout/stderr take 'pipe' or 'devnull', got {streams}.")
        sandbox.supervisor.push("exec.start", exec_id=process.id, argv=list(args["argv"]),
                                workdir=_path(args.get("workdir"), "workdir"), env=env, pty=bool(args.get("pty")),
                                timeout=timeout, size=_size(args.get("size")), **streams)
        await process.started
        return {"exec_id": process.id}

    async def stdin(self, conn: Connection, args: dict) -> dict:
        sandbox = self._sandbox(conn, args["sandbox_id"])
        process = sandbox.execs.get(args["exec_id"])
        if process is None and args["exec_id"] == sandbox.id:
            await asyncio.shield(sandbox.attached)
            process = sandbox.execs.get(sandbox.id)
        if process is None:
            raise NotFoundError(f"No process {args['exec_id']!r} in sandbox {sandbox.id}.")
        if process.returncode is None and sandbox.supervisor is not None:
            sandbox.supervisor.push("exec.stdin", exec_id=process.id, data=bytes(args.get("data") or b""),
                                    eof=bool(args.get("eof")))
        return {}

    async def resize(self, conn: Connection, args: dict) -> dict:
        """The terminal of a command started with `pty` changed size ([rows, columns])."""
        sandbox = self._sandbox(conn, args["sandbox_id"])
        size = _size(args["size"])
        process = sandbox.execs.get(args["exec_id"])
        if process is not None and process.returncode is None and sandbox.supervisor is not None:
            sandbox.supervisor.push("exec.resize", exec_id=process.id, size=size)
        return {}

    async def wait(self, conn: Connection, args: dict) -> dict:
        """The sandbox's end: `returncode`, `state`, `reason`; `{pending: true}` if it is still
        running after `timeout` seconds."""
        sandbox = self._sandbox(conn, args["sandbox_id"])
        if not sandbox.ended.is_set():
            timeout = args.get("timeout")
            if timeout is not None and timeout <= 0:
                return {"pending": True}
            if timeout is not None:
                timeout = min(timeout, MAX_TIMEOUT)  # (infinity waits as long as a sandbox may live)
            try:
                await asyncio.wait_for(asyncio.shield(sandbox.ended.wait()), timeout)
            except asyncio.TimeoutError:
                return {"pending": True}
        return sandbox.row()

    async def terminate(self, conn: Connection, args: dict) -> dict:
        sandbox = self._sandbox(conn, args["sandbox_id"])
        self.stop(sandbox, SandboxState.TERMINATED, "terminated by request")
        return sandbox.row()

    async def get(self, conn: Connection, args: dict) -> dict:
        """A sandbox's row; with `read_output`, the entrypoint's output so far (`output`:
        [[fd, data]]) and what follows pushed to this connection."""
        sandbox = self._sandbox(conn, args["sandbox_id"])
        row = sandbox.row()
        if args.get("read_output"):
            row["output"] = [[fd, data] for fd, data in sandbox.output]
            main = sandbox.execs.get(sandbox.id)
            row["entrypoint_returncode"] = main.returncode if main is not None else None
            if conn not in sandbox.readers and not sandbox.ended.is_set():
                sandbox.readers.add(conn)
                conn.on_close.append(lambda: sandbox.readers.discard(conn))
        return row

    async def list(self, conn: Connection, args: dict) -> list[dict]:
        """Running sandboxes (with `all`, ended ones the server still knows too), of `app_id`
        and carrying every tag of `tags`; a container sees its own app's only."""
        own = self._own_app(conn)
        app_id = args.get("app_id")
        if own is not None:
            if app_id is not None and app_id != own.id:
                raise PermissionDeniedError("A container may only list the sandboxes of its own app.")
            app_id = own.id
        tags = _tags(args.get("tags") or {})
        rows = []
        for sandbox in self.sandboxes.values():
            if sandbox.state.ended and not args.get("all"):
                continue
            if app_id is not None and sandbox.app.id != app_id:
                continue
            if any(sandbox.tags.get(key) != value for key, value in tags.items()):
                continue
            rows.append(sandbox.row())
        return sorted(rows, key=lambda row: row["created"], reverse=True)

    async def set_tags(self, conn: Connection, args: dict) -> dict:
        sandbox = self._sandbox(conn, args["sandbox_id"])
        sandbox.tags = _tags(args["tags"])
        return {}

    # -- requests of the supervisor (or of a function's container running a command) --------
    def _hosted(self, conn: Connection, exec_id: str) -> tuple[Sandbox | None, Exec | None]:
        """The sandbox whose supervisor `conn` is and its command `exec_id`; or, for a function's
        container, the command it runs for `ferry container exec`."""
        sandbox = self._by_container.get(conn.principal.credential_id)
        if sandbox is not None and sandbox.supervisor is conn:
            return sandbox, sandbox.execs.get(exec_id)
        process = self._container_execs.get(exec_id)
        if process is not None and process.host is conn:
            return None, process
        raise PermissionDeniedError("Only a sandbox's supervisor (or the container running the command) sends "
                                    "this request.")

    async def attach(self, conn: Connection, args: dict) -> dict:
        """The supervisor connected: it runs the entrypoint and takes exec requests from now on."""
        sandbox = self._by_container.get(conn.principal.credential_id)
        if sandbox is None or sandbox.supervisor is not None or sandbox.state.ended:
            raise PermissionDeniedError("sandbox.attach is for a sandbox's own supervisor, once.")
        sandbox.supervisor = conn
        conn.on_close.append(sandbox.detached.set)
        sandbox.state = SandboxState.RUNNING
        if sandbox.entrypoint:
            started = asyncio.get_running_loop().create_future()
            started.set_result(None)  # (the supervisor starts it now; a failure is its exit code 127)
            sandbox.execs[sandbox.id] = Exec(id=sandbox.id, owner=None, started=started)
        sandbox.attached.set_result(None)
        return {"sandbox_id": sandbox.id, "entrypoint": sandbox.entrypoint, "workdir": sandbox.workdir,
                "mount": sandbox.mount}

    async def started(self, conn: Connection, args: dict) -> dict:
        sandbox, process = self._hosted(conn, args["exec_id"])
        if process is not None and not process.started.done():
            if args.get("error"):
                (sandbox.execs if sandbox is not None else self._container_execs).pop(process.id, None)
                process.started.set_exception(ExecutionError(args["error"]))
            else:
                process.started.set_result(None)
        return {}

    async def io(self, conn: Connection, args: dict) -> dict:
        sandbox, process = self._hosted(conn, args["exec_id"])
        if process is None:
            return {}
        data, fd = bytes(args["data"]), args["fd"]
        if sandbox is not None and process.id == sandbox.id:  # the entrypoint's: kept for late readers, pushed to all
            if sandbox.output_bytes + len(data) <= OUTPUT_KEPT:
                sandbox.output.append((fd, data))
                sandbox.output_bytes += len(data)
            targets = sandbox.readers
        else:
            targets = {process.owner} if process.owner is not None else set()
        for target in list(targets):
            target.push("sandbox.out", exec_id=process.id, fd=fd, data=data)
        return {}

    async def exited(self, conn: Connection, args: dict) -> dict:
        sandbox, process = self._hosted(conn, args["exec_id"])
        if process is not None and process.returncode is None:
            process.returncode = args["code"]
            if sandbox is not None:
                self._exit_push(sandbox, process, args["code"])
            else:
                self._container_exec_ended(process, args["code"])
        return {}

    # -- `ferry container exec`: commands in a function's container (administrators) -----------
    async def container_exec(self, conn: Connection, args: dict) -> dict:
        """Start `argv` in a running function container (named by its id or a unique start of
        it); its output is pushed to this connection as for `sandbox.exec`. The command is
        killed if this connection closes."""
        containers = self._parts.containers().containers
        wanted = args["container_id"]
        if not wanted:
            raise InvalidError("`ferry container exec ID -- CMD`: give a container id (`ferry container list`).")
        size = _size(args.get("size"))
        env = args.get("env") or {}
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise InvalidError("env takes a dict of strings to strings.")
        matches = [c for cid, c in containers.items() if cid == wanted] or \
                  [c for cid, c in containers.items() if cid.startswith(wanted)]
        if not matches:
            sandbox = next((s for s in self.sandboxes.values() if wanted in (s.id, s.container_id)), None)
            if sandbox is not None:
                raise InvalidError(f"{wanted} is a sandbox's: use Sandbox.from_id({sandbox.id!r}).exec(...).")
            raise NotFoundError(f"No running container {wanted!r}. See `ferry container list`.")
        if len(matches) > 1:
            raise InvalidError(f"{wanted!r} names {len(matches)} containers: give more of the id.")
        container = matches[0]
        if container.conn is None or container.conn.closed:
            raise ExecutionError(f"Container {container.id} is not connected yet (it is {container.state.value}); "
                                 "try again once it is ready.")
        if not args["argv"]:
            raise InvalidError("`ferry container exec ID -- CMD`: give a command.")
        exec_id = args["exec_id"]
        if not exec_id.startswith("ex-") or len(exec_id) > 64 or exec_id in self._container_execs:
            raise InvalidError(f"Invalid or reused exec id {exec_id!r}.")
        host = container.conn
        process = Exec(id=exec_id, owner=conn, started=asyncio.get_running_loop().create_future(), host=host)
        self._container_execs[exec_id] = process
        host.on_close.append(lambda: self._container_exec_ended(process, -9))
        conn.on_close.append(lambda: process.returncode is None and host.push("exec.kill", exec_id=exec_id))
        host.push("exec.start", exec_id=exec_id, argv=list(args["argv"]), pty=bool(args.get("pty")),
                  size=size, workdir=_path(args.get("workdir"), "workdir"), env=env)
        await process.started
        return {"exec_id": exec_id, "container_id": container.id}

    async def container_stdin(self, conn: Connection, args: dict) -> dict:
        process = self._container_execs.get(args["exec_id"])
        if process is None:  # it has ended: what it was sent is dropped, as by a closed pipe
            return {}
        if process.owner is not conn:
            raise PermissionDeniedError(f"Command {args['exec_id']!r} was started by another connection.")
        assert process.host is not None
        process.host.push("exec.stdin", exec_id=process.id, data=bytes(args.get("data") or b""),
                          eof=bool(args.get("eof")))
        return {}

    async def container_resize(self, conn: Connection, args: dict) -> dict:
        size = _size(args["size"])
        process = self._container_execs.get(args["exec_id"])
        if process is not None and process.owner is conn and process.host is not None:
            process.host.push("exec.resize", exec_id=process.id, size=size)
        return {}

    def _container_exec_ended(self, process: Exec, code: int) -> None:
        if self._container_execs.pop(process.id, None) is None:
            return
        process.returncode = code
        if not process.started.done():
            process.started.set_exception(ExecutionError("The container ended before the command started."))
        elif process.owner is not None:
            process.owner.push("sandbox.exit", exec_id=process.id, code=code)
