"""`Sandbox`: an isolated container of an app, running commands on request.

    app = ferry.App.lookup("sandboxes", create_if_missing=True)
    sb = ferry.Sandbox.create(app=app, image=ferry.Image.debian_slim().pip_install("numpy"))
    p = sb.exec("python", "-c", "print(6 * 7)")
    for line in p.stdout:          # streamed while the command runs
        print(line, end="")
    assert p.wait() == 0
    sb.terminate()

A sandbox runs on the server's runtime like a function's container, with the same images,
secrets, volumes and limits; `timeout` (default 5 minutes, at most 24 h) ends it. Every
method has an `.aio` form. The process of `exec` (`ContainerProcess`) has `stdout` and
`stderr` readers (`.read()`, or iterate line by line), a `stdin` writer
(`write()`, `write_eof()`, `drain()`), `wait()`, `poll()` and `returncode`.
"""

from __future__ import annotations

import asyncio
import enum
import os
import secrets as _tokens
import sys
from typing import Any, AsyncIterator, Iterator

from ._client import Client
from ._sync import iterate_async, iterate_sync, synced
from ._unsupported import unsupported, unsupported_property
from .exception import InvalidError, SandboxTerminatedError, SandboxTimeoutError

DEFAULT_TIMEOUT = 300
MAX_TIMEOUT = 24 * 3600


class StreamType(enum.Enum):
    """Where the output of `Sandbox.exec` goes: PIPE (read it), DEVNULL (dropped), STDOUT
    (printed to this process's stdout as it comes)."""

    PIPE = "pipe"
    DEVNULL = "devnull"
    STDOUT = "stdout"


class StreamReader:
    """The stdout or stderr of a sandbox process: `read()` waits for the end and returns it
    all; iterating yields lines as they are written (the last one without its newline if the
    output ends without one)."""

    def __init__(self, text: bool = True, echo: Any = None) -> None:
        self._text = text
        self._echo = echo  # a file to print to as output comes (StreamType.STDOUT)
        self._buffer = bytearray()
        self._eof = False
        self._error: BaseException | None = None
        self._changed: asyncio.Event | None = None  # on the client loop

    # -- fed by the client loop ----------------------------------------------------------------
    def _event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def _feed(self, data: bytes) -> None:
        if self._echo is not None:
            self._echo.write(data.decode("utf-8", errors="replace"))
            self._echo.flush()
            return
        self._buffer += data
        self._event().set()

    def _close(self, error: BaseException | None = None) -> None:
        self._eof = True
        self._error = self._error or error
        self._event().set()

    def _decode(self, data: bytes) -> Any:
        return data.decode("utf-8", errors="replace") if self._text else bytes(data)

    async def _wait_change(self) -> None:
        event = self._event()
        event.clear()
        await event.wait()

    # -- reading -------------------------------------------------------------------------------
    async def _read(self) -> Any:
        while not self._eof:
            await self._wait_change()
        if self._error is not None and not self._buffer:
            raise self._error
        data, self._buffer = bytes(self._buffer), bytearray()
        return self._decode(data)

    read = synced(_read)
    read.__doc__ = """Everything the stream holds until it ends (str, or bytes with text=False)."""

    async def _lines(self) -> AsyncIterator[Any]:
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line, self._buffer = bytes(self._buffer[:newline + 1]), self._buffer[newline + 1:]
                yield self._decode(line)
                continue
            if self._eof:
                if self._buffer:
                    line, self._buffer = bytes(self._buffer), bytearray()
                    yield self._decode(line)
                if self._error is not None:
                    raise self._error
                return
            await self._wait_change()

    def __iter__(self) -> Iterator[Any]:
        return iterate_sync(self._lines())

    def __aiter__(self) -> AsyncIterator[Any]:
        return iterate_async(self._lines())


class StreamWriter:
    """The stdin of a sandbox process: `write()` and `write_eof()` buffer, `drain()` sends."""

    def __init__(self, client: Client, method: str, **target: str) -> None:
        self._client = client
        self._method = method  # sandbox.stdin (target: sandbox_id, exec_id) or container.stdin (exec_id)
        self._target = target
        self._pending = bytearray()
        self._eof = False

    def write(self, data: bytes | bytearray | memoryview | str) -> None:
        """Queue `data` (str is sent as UTF-8) for the next `drain()`."""
        if self._eof:
            raise InvalidError("stdin was closed with write_eof(); nothing more can be written.")
        if isinstance(data, str):
            data = data.encode()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"stdin.write() takes bytes or str, not {type(data).__name__}.")
        self._pending += bytes(data)

    def write_eof(self) -> None:
        """Close stdin after what was written (sent by the next `drain()`)."""
        self._eof = True

    async def _drain(self) -> None:
        data, self._pending = bytes(self._pending), bytearray()
        await self._client.request(self._method, **self._target, data=data, eof=self._eof)

    drain = synced(_drain)
    drain.__doc__ = """Send what was written (and the end of input after write_eof())."""


class _Output:
    """The output of one process (an exec, or a sandbox's entrypoint) as it arrives."""

    def __init__(self, client: Client, exec_id: str, stdout: StreamReader, stderr: StreamReader) -> None:
        self.client = client
        self.exec_id = exec_id
        self.stdout, self.stderr = stdout, stderr
        self.returncode: int | None = None
        self.exited = asyncio.get_running_loop().create_future()
        self.held: list[dict[str, Any]] | None = None  # frames kept back until `release()`
        client.sandbox_handlers.setdefault(exec_id, []).append(self.on_frame)

    def hold(self) -> None:
        """Keep frames back (their order after what `release` is given first)."""
        self.held = []

    def release(self, output: list[list[Any]]) -> None:
        held, self.held = self.held or [], None
        for fd, data in output:
            self.feed(fd, data)
        for frame in held:
            self.on_frame(frame)

    def feed(self, fd: int, data: bytes) -> None:
        (self.stderr if fd == 2 else self.stdout)._feed(data)

    def on_frame(self, frame: dict[str, Any]) -> None:
        if self.held is not None:
            self.held.append(frame)
            return
        kind = frame.get("k")
        if kind == "sandbox.out":
            self.feed(frame["fd"], frame["data"])
        elif kind == "sandbox.exit":
            self.finish(frame["code"])
        elif kind == "lost":
            self.stdout._close(frame["error"])
            self.stderr._close(frame["error"])
            if not self.exited.done():
                self.exited.set_exception(frame["error"])
                self.exited.exception()
            self.forget()

    def finish(self, code: int) -> None:
        self.returncode = code
        self.stdout._close()
        self.stderr._close()
        if not self.exited.done():
            self.exited.set_result(code)
        self.forget()

    def forget(self) -> None:
        handlers = self.client.sandbox_handlers.get(self.exec_id, [])
        if self.on_frame in handlers:
            handlers.remove(self.on_frame)
        if not handlers:
            self.client.sandbox_handlers.pop(self.exec_id, None)


class ContainerProcess:
    """A command started by `Sandbox.exec()`."""

    def __init__(self, output: _Output, stdin: StreamWriter) -> None:
        self._output = output
        self._stdin = stdin

    @property
    def stdout(self) -> StreamReader:
        return self._output.stdout

    @property
    def stderr(self) -> StreamReader:
        return self._output.stderr

    @property
    def stdin(self) -> StreamWriter:
        return self._stdin

    @property
    def returncode(self) -> int | None:
        """Its exit code once it has ended (negative: killed by that signal), else None."""
        return self._output.returncode

    async def _poll(self) -> int | None:
        return self._output.returncode

    poll = synced(_poll)
    poll.__doc__ = """Its exit code if it has ended, else None (does not wait)."""

    async def _wait(self) -> int:
        return await asyncio.shield(self._output.exited)

    wait = synced(_wait)
    wait.__doc__ = """Wait until it ends; its exit code."""

    attach = unsupported("ContainerProcess.attach", "attaching this terminal to a process is not built; "
                                                    "use `ferry container exec ID -- CMD` or read its streams")


_CREATE_UNSUPPORTED = {
    "network_file_systems": {}, "idle_timeout": None, "cloud": None, "region": None, "runtime": None,
    "outbound_cidr_allowlist": None, "outbound_domain_allowlist": None, "_experimental_outbound_policy": None,
    "inbound_cidr_allowlist": None, "pty": False, "encrypted_ports": [], "h2_ports": [], "unencrypted_ports": [],
    "custom_domain": None, "proxy": None, "include_oidc_identity_token": False, "readiness_probe": None,
    "verbose": False, "experimental_options": None, "_experimental_enable_snapshot": False,
    "_experimental_persistent": False, "client": None, "environment_name": None, "pty_info": None,
    "cidr_allowlist": None,
}


def _in_container() -> bool:
    return bool(os.environ.get("FERRY_CONTAINER_ID"))


def _check_strings(args: tuple, what: str) -> list[str]:
    if not all(isinstance(a, str) for a in args):
        raise InvalidError(f"{what} takes strings, e.g. ('python', '-c', 'print(1)'); got {args!r}.")
    return list(args)


def _env(env: Any) -> dict[str, str]:
    if env is None:
        return {}
    if not isinstance(env, dict) or not all(isinstance(k, str) and (v is None or isinstance(v, str))
                                            for k, v in env.items()):
        raise InvalidError("env= takes a dict of strings to strings (or None to unset).")
    return {k: v for k, v in env.items() if v is not None}


class Sandbox:
    """A running (or ended) sandbox. Make one with `Sandbox.create()`, or reach one by id
    (`Sandbox.from_id`) or by listing them (`Sandbox.list`)."""

    def __init__(self, sandbox_id: str, client: Client, row: dict[str, Any] | None = None) -> None:
        self._id = sandbox_id
        self._client = client
        self._row = row or {}
        self._returncode: int | None = None
        self._main: _Output | None = None
        self._main_stdin = StreamWriter(client, "sandbox.stdin", sandbox_id=sandbox_id, exec_id=sandbox_id)

    def __repr__(self) -> str:
        return f"Sandbox({self._id!r})"

    @property
    def object_id(self) -> str:
        return self._id

    # -- creating and finding ------------------------------------------------------------------
    @staticmethod
    async def _create(*entrypoint: str, app: Any = None, name: str | None = None, tags: dict[str, str] | None = None,
                      image: Any = None, env: dict[str, str | None] | None = None, secrets: Any = None,
                      timeout: int | None = DEFAULT_TIMEOUT, workdir: str | None = None, gpu: Any = None,
                      cpu: float | None = None, memory: int | None = None, block_network: bool = False,
                      volumes: Any = None, **others: Any) -> "Sandbox":
        for option, value in others.items():
            if option not in _CREATE_UNSUPPORTED:
                raise TypeError(f"Sandbox.create() got an unexpected keyword argument {option!r}.")
            if value != _CREATE_UNSUPPORTED[option]:
                raise NotImplementedError(f"Sandbox.create({option}=...) is not supported by Ferry yet.")
        argv = _check_strings(entrypoint, "Sandbox.create(*entrypoint)")
        app_id = None
        if app is not None:
            app_id = getattr(app, "app_id", None)
            if app_id is None:
                raise InvalidError(f"App {getattr(app, 'name', app)!r} is not running: create the sandbox inside "
                                   "`with app.run():`, or use ferry.App.lookup('name', create_if_missing=True).")
        elif not _in_container():
            raise InvalidError("Sandbox.create() needs app= outside a container: pass a running app, e.g. "
                               "app=ferry.App.lookup('my-sandboxes', create_if_missing=True).")
        if timeout is None:
            timeout = MAX_TIMEOUT
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 1 <= timeout <= MAX_TIMEOUT:
            raise InvalidError(f"timeout= takes seconds between 1 and {MAX_TIMEOUT} (24 h), got {timeout!r}.")
        if workdir is not None and (not isinstance(workdir, str) or not workdir.startswith("/")):
            raise InvalidError(f"workdir= takes an absolute path, e.g. '/root/work'; got {workdir!r}.")
        from ._resources import function_config

        config = function_config(image=image, gpu=gpu, cpu=cpu, memory=memory, secrets=secrets, volumes=volumes,
                                 block_network=block_network)
        from ._image import Image

        image = image if image is not None else Image.debian_slim()
        wire = image._wire()
        client = await Client.from_env()
        if wire.blobs:
            missing = await client.request("blob.missing", hashes=list(wire.blobs))
            for digest in missing:
                await client.request("blob.put", data=wire.blobs[digest], hash=digest)
        definition = {"image": wire.definition, "config": {k: v for k, v in config.items() if v is not None},
                      "env": _env(env)}
        progress_id, display = _tokens.token_hex(8), None
        if not _in_container():  # a build shows its progress here (nothing when the image is cached)
            from ._image_progress import BuildDisplay  # rich: client side only, not in containers

            display = client.image_handlers[progress_id] = BuildDisplay()
        try:
            result = await client.request("sandbox.create", app_id=app_id, entrypoint=argv, definition=definition,
                                          workdir=workdir, timeout=timeout, tags=tags or {}, name=name,
                                          progress_id=progress_id)
        finally:
            client.image_handlers.pop(progress_id, None)
            if display is not None:
                display.close()
        # (read from the start: output written before this connection asked for it is kept)
        return await Sandbox._reading(client, result["sandbox_id"])

    create = synced(_create)
    create.__doc__ = """Start a sandbox in `app` running `*entrypoint` (or nothing: it then stays up
until `terminate()` or its `timeout`), with the image, env, secrets, volumes, workdir and
cpu/memory/gpu limits given, and no network but the control plane with `block_network=True`.
Inside a container, `app` defaults to the container's own app."""

    @staticmethod
    async def _from_id(sandbox_id: str, client: Any = None) -> "Sandbox":
        if client is not None:
            raise NotImplementedError("Sandbox.from_id(client=...) is not supported by Ferry yet.")
        return await Sandbox._reading(await Client.from_env(), sandbox_id)

    @staticmethod
    async def _reading(connection: Client, sandbox_id: str) -> "Sandbox":
        """A handle that reads the entrypoint's output: what it wrote so far, then what follows
        (pushed to this connection from the same moment on, so nothing is lost or doubled)."""
        main = _Output(connection, sandbox_id, StreamReader(), StreamReader())
        main.hold()  # output pushed after the answer goes after the output it holds
        try:
            row = await connection.request("sandbox.get", sandbox_id=sandbox_id, read_output=True)
        except BaseException:
            main.forget()
            raise
        sandbox = Sandbox(sandbox_id, connection, row)
        sandbox._main = main
        main.release(row.get("output") or [])
        if row["state"] not in ("starting", "running") and main.returncode is None:
            sandbox._returncode = row["returncode"]
            main.finish(row.get("entrypoint_returncode") if row.get("entrypoint_returncode") is not None
                        else row["returncode"])
        return sandbox

    from_id = synced(_from_id)
    from_id.__doc__ = """The sandbox with this `object_id` (its entrypoint's output so far is readable)."""

    @staticmethod
    async def _from_name(app_name: str, name: str, *, environment_name: str | None = None,
                         include_terminated: bool = False, client: Any = None) -> "Sandbox":
        if environment_name is not None or client is not None:
            raise NotImplementedError("Sandbox.from_name(environment_name=, client=) is not supported by Ferry yet.")
        connection = await Client.from_env()
        app = await connection.request("app.lookup", name=app_name)
        rows = await connection.request("sandbox.list", app_id=app["app_id"], all=include_terminated)
        for row in rows:
            if row.get("name") == name:
                return await Sandbox._from_id(row["id"])
        from .exception import NotFoundError

        raise NotFoundError(f"No running sandbox named {name!r} in app {app_name!r}.")

    from_name = synced(_from_name)
    from_name.__doc__ = """The sandbox created with `name=` in the app `app_name`."""

    async def _list(*, app_id: str | None = None, tags: dict[str, str] | None = None,
                    client: Any = None) -> AsyncIterator["Sandbox"]:
        if client is not None:
            raise NotImplementedError("Sandbox.list(client=...) is not supported by Ferry yet.")
        connection = await Client.from_env()
        for row in await connection.request("sandbox.list", app_id=app_id, tags=tags or {}):
            yield Sandbox(row["id"], connection, row)

    list = synced(_list)  # (a plain function: synced sees an async generator)
    list.__doc__ = """The running sandboxes (of `app_id`, carrying every tag of `tags`), newest first."""

    async def _hydrate(self, client: Any = None) -> "Sandbox":
        self._row = await self._client.request("sandbox.get", sandbox_id=self._id)
        return self

    hydrate = synced(_hydrate)
    hydrate.__doc__ = """Check that the sandbox exists (and refresh what is known of it)."""

    # -- tags ----------------------------------------------------------------------------------
    async def _set_tags(self, tags: dict[str, str], *, client: Any = None) -> None:
        await self._client.request("sandbox.set_tags", sandbox_id=self._id, tags=tags)

    set_tags = synced(_set_tags)
    set_tags.__doc__ = """Replace the sandbox's tags (strings to strings; `Sandbox.list(tags=...)` filters on them)."""

    async def _get_tags(self) -> dict[str, str]:
        return (await self._client.request("sandbox.get", sandbox_id=self._id))["tags"]

    get_tags = synced(_get_tags)
    get_tags.__doc__ = """The sandbox's tags."""

    # -- processes -----------------------------------------------------------------------------
    async def _exec(self, *args: str, stdout: StreamType = StreamType.PIPE, stderr: StreamType = StreamType.PIPE,
                    timeout: int | None = None, workdir: str | None = None, env: dict[str, str | None] | None = None,
                    secrets: Any = None, text: bool = True, bufsize: int = -1, pty: bool = False,
                    _pty_info: Any = None, pty_info: Any = None) -> ContainerProcess:
        argv = _check_strings(args, "Sandbox.exec(*args)")
        if secrets:
            raise NotImplementedError("Sandbox.exec(secrets=...) is not supported by Ferry yet: pass the "
                                      "secrets to Sandbox.create(), or values with env=.")
        if _pty_info is not None or pty_info is not None:
            raise NotImplementedError("Sandbox.exec(pty_info=...) is not supported by Ferry; use pty=True.")
        if bufsize not in (-1, 1):
            raise InvalidError("bufsize= takes -1 (chunks) or 1 (lines).")
        for option, value in (("stdout", stdout), ("stderr", stderr)):
            if not isinstance(value, StreamType):
                raise InvalidError(f"{option}= takes a StreamType (PIPE, DEVNULL or STDOUT), got {value!r}.")
        readers = [StreamReader(text, sys.stdout if kind is StreamType.STDOUT else None) for kind in (stdout, stderr)]
        exec_id = "ex-" + _tokens.token_hex(8)  # named here: its output may come before the answer
        output = _Output(self._client, exec_id, *readers)
        try:
            await self._client.request(
                "sandbox.exec", sandbox_id=self._id, exec_id=exec_id, argv=argv, workdir=workdir, env=_env(env),
                pty=bool(pty), timeout=timeout, stdout="devnull" if stdout is StreamType.DEVNULL else "pipe",
                stderr="devnull" if stderr is StreamType.DEVNULL else "pipe")
        except BaseException:
            output.forget()
            raise
        return ContainerProcess(output, StreamWriter(self._client, "sandbox.stdin", sandbox_id=self._id, exec_id=exec_id))

    exec = synced(_exec)
    exec.__doc__ = """Run a command in the sandbox; returns its `ContainerProcess` at once."""

    # -- the entrypoint ------------------------------------------------------------------------
    def _entry(self) -> _Output:
        if self._main is None:
            raise InvalidError("This Sandbox handle (from Sandbox.list) does not read its output: use "
                               "Sandbox.from_id(sandbox.object_id).")
        return self._main

    @property
    def stdout(self) -> StreamReader:
        """The entrypoint's stdout."""
        return self._entry().stdout

    @property
    def stderr(self) -> StreamReader:
        """The entrypoint's stderr."""
        return self._entry().stderr

    @property
    def stdin(self) -> StreamWriter:
        """The entrypoint's stdin."""
        return self._main_stdin

    @property
    def returncode(self) -> int | None:
        """None while it runs; the entrypoint's exit code, 124 after its timeout, 137 after
        terminate() (as the hosted platform reports them)."""
        return self._returncode

    def _ended(self, row: dict[str, Any], raise_on_termination: bool) -> int:
        self._row = row
        self._returncode = row["returncode"]
        if row["state"] == "timeout":
            raise SandboxTimeoutError(f"Sandbox {self._id} ran past its timeout ({row['reason']}).")
        if row["state"] == "terminated" and raise_on_termination:
            raise SandboxTerminatedError(f"Sandbox {self._id} was terminated ({row['reason']}).")
        return row["returncode"]

    async def _wait(self, raise_on_termination: bool = True) -> None:
        while True:
            row = await self._client.request("sandbox.wait", sandbox_id=self._id, timeout=60)
            if not row.get("pending"):
                self._ended(row, raise_on_termination)
                return

    wait = synced(_wait)
    wait.__doc__ = """Wait until the sandbox ends. Raises SandboxTimeoutError after its timeout, and
SandboxTerminatedError after terminate() unless raise_on_termination=False."""

    async def _poll(self) -> int | None:
        row = await self._client.request("sandbox.wait", sandbox_id=self._id, timeout=0)
        if row.get("pending"):
            return None
        self._row, self._returncode = row, row["returncode"]
        return self._returncode

    poll = synced(_poll)
    poll.__doc__ = """The sandbox's returncode if it has ended, else None (does not wait)."""

    async def _terminate(self, *, wait: bool = False) -> int | None:
        await self._client.request("sandbox.terminate", sandbox_id=self._id)
        if not wait:
            return None
        await self._wait(raise_on_termination=False)
        return self._returncode

    terminate = synced(_terminate)
    terminate.__doc__ = """End the sandbox (its processes are killed; volumes are committed). With
wait=True, wait until it has ended and return its returncode."""

    # -- the reference API's other names -------------------------------------------------------
    client = unsupported_property("Sandbox.client", "sandboxes use the process's own connection")
    create_connect_token = unsupported("Sandbox.create_connect_token", "sandbox HTTP connect tokens are not built")
    detach = unsupported("Sandbox.detach", "a sandbox handle holds no resources to detach from")
    filesystem = unsupported_property("Sandbox.filesystem", "the sandbox filesystem API is not built; "
                                                            "use exec('cat', path) or a Volume")
    get_dashboard_url = unsupported("Sandbox.get_dashboard_url", "the dashboard has no sandbox pages yet")
    logs = unsupported_property("Sandbox.logs", "use stdout/stderr of the sandbox or of its processes")
    mount_image = unsupported("Sandbox.mount_image", "images are fixed when a sandbox is created")
    unmount_image = unsupported("Sandbox.unmount_image", "images are fixed when a sandbox is created")
    reload_volumes = unsupported("Sandbox.reload_volumes", "volumes are filled when a sandbox starts")
    snapshot_directory = unsupported("Sandbox.snapshot_directory", "sandbox snapshots are not built")
    snapshot_filesystem = unsupported("Sandbox.snapshot_filesystem", "sandbox snapshots are not built")
    tunnels = unsupported("Sandbox.tunnels", "tunnels (ports exposed from sandboxes) are not built")
    wait_until_ready = unsupported("Sandbox.wait_until_ready", "readiness probes are not built")
