"""Zygotes: pre-imported template processes that fork new containers for the process runtime.

A container started the plain way (`python -m ferry._container`) spends most of its start
importing Ferry and its dependencies (about 80 ms of a 90 ms cold start on a 2-core machine).
A zygote has done that once, runs no threads, and forks a child per new container:

    server (ZygotePool / Zygote)               zygote (zygote_process.py, one per interpreter)
      spawn(env, cwd, cgroup) ──one SOCK_SEQPACKET──►  fork(); the child: own session, stdio onto
        message, with the container's stdout and        the pipes it was sent, joins its cgroup,
        stderr pipes attached (SCM_RIGHTS)              takes env, cwd and sys.path[0] as a fresh
      ◄── {"op": "spawned", "pid"}                      interpreter would, then runs the container
      ◄── {"op": "exited", "pid", "code"}             reaps children (SIGCHLD) and reports exits

One zygote serves each *interpreter key*: the Python executable plus the environment variables
an interpreter reads only when it starts (`PYTHON*`, the locale). Other variables (secrets,
`FERRY_*`) are set in the child, which therefore behaves as a container started the plain way.
A container whose key has no ready zygote yet is started the plain way while the zygote starts
in the background, so no start waits for one; a zygote that cannot start is retried after
`RETRY_SECONDS`. If a zygote dies, its children are killed (their containers are replaced).

Children share the zygote's hash seed (`PYTHONHASHSEED`); `random` reseeds itself after fork.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from .base import inherited_environment
from .zygote_process import MAX_MESSAGE  # a spawn request (its environment) fits one message

log = logging.getLogger("ferry.server")

START_TIMEOUT = 60.0
SPAWN_TIMEOUT = 10.0
RETRY_SECONDS = 30.0
LOCALE_VARS = ("LANG", "LC_ALL", "LC_CTYPE")


class ZygoteError(Exception):
    """A zygote could not fork a container; the caller starts it the plain way."""


def interpreter_key(python: str, env: Mapping[str, str]) -> tuple[str, tuple[tuple[str, str], ...]]:
    """What a forked container shares with its zygote: the interpreter and its start-up settings."""
    startup = sorted((k, v) for k, v in env.items() if k.startswith("PYTHON") or k in LOCALE_VARS)
    return python, tuple(startup)


class ZygotePool:
    """The zygotes of one process runtime (or of one node's agent, ray/node_agent.py), one per
    interpreter key, started on first need: `make(python, env)` of `environment()`, the
    container environment they may inherit."""

    def __init__(self, environment: Callable[[], dict[str, str]] = inherited_environment,
                 make: Callable[[str, dict[str, str]], Zygote] | None = None) -> None:
        self._zygotes: dict[tuple, Zygote] = {}
        self._tasks: set[asyncio.Task] = set()
        self._environment = environment
        self._make = make or Zygote

    def ready_for(self, python: str, env: Mapping[str, str]) -> Zygote | None:
        """The ready zygote for this interpreter key, or None (then one is started for next time)."""
        key = interpreter_key(python, env)
        zygote = self._zygotes.get(key)
        if zygote is not None and zygote.state == "ready":
            return zygote
        if zygote is None or (zygote.state == "dead" and time.monotonic() >= zygote.retry_at):
            base = {k: v for k, v in self._environment().items()
                    if not (k.startswith("PYTHON") or k in LOCALE_VARS)}
            zygote = self._make(python, {**base, **dict(key[1])})
            self._zygotes[key] = zygote
            task = asyncio.create_task(zygote.start())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return None

    async def ready(self, python: str, env: Mapping[str, str]) -> Zygote | None:
        """The zygote for this interpreter key, waiting for it while it starts (None if it
        cannot start now)."""
        zygote = self.ready_for(python, env) or self._zygotes.get(interpreter_key(python, env))
        if zygote is not None and zygote.state == "starting":
            await zygote.settled.wait()
        return zygote if zygote is not None and zygote.state == "ready" else None

    async def close(self) -> None:
        """End every zygote (their containers have ended by now)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(z.stop() for z in self._zygotes.values()), return_exceptions=True)
        self._zygotes.clear()


class Zygote:
    """The server's side of one zygote process."""

    def __init__(self, python: str, env: dict[str, str], *, snapshot: Path | None = None,
                 log_path: Path | None = None, cwd: str | None = None) -> None:
        self.python = python
        self.env = env
        self.snapshot = snapshot           # a memory snapshot's template: its spec (snapshots.py)
        self.log_path = log_path           # where the template's own output goes (else nowhere)
        self.cwd = cwd
        self.failure = ""                  # why it could not start, once dead
        self.state = "starting"            # starting | ready | dead
        self.retry_at = 0.0
        self.pid: int | None = None
        self._sock: socket.socket | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._ready: asyncio.Future | None = None
        self._requests: dict[int, asyncio.Future] = {}
        self._exits: dict[int, asyncio.Future] = {}   # child pid -> its exit code
        self._ids = itertools.count(1)
        # whether the pids it reports are this server's (a sandbox's template has its own pid
        # namespace: its children are ended by other means, never signalled by those pids)
        self.pids_are_ours = True
        # whether each child gets SIGKILL when this zygote ends (PR_SET_PDEATHSIG; node agents)
        self.children_die_with_it = False
        self.settled = asyncio.Event()     # set once its start has succeeded or failed

    async def start(self) -> None:
        try:
            await self._start()
        finally:
            self.settled.set()

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [self.python, "-m", "ferry.server.runtimes.zygote_process", str(theirs.fileno())]
        output: Any = asyncio.subprocess.DEVNULL
        if self.snapshot is not None:
            argv.append(str(self.snapshot))
        if self.log_path is not None:
            output = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it; closed below
        try:
            self._process = await self._launch(argv, theirs.fileno(), output)
        except OSError as exc:
            ours.close()
            self._give_up(f"could not start: {exc}")
            return
        finally:
            theirs.close()
            if self.log_path is not None:
                output.close()
        ours.setblocking(False)
        self._sock = ours
        self._ready = loop.create_future()
        loop.add_reader(ours.fileno(), self._on_readable)
        try:
            self.pid = await asyncio.wait_for(self._ready, START_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - any failure means: start containers the plain way
            self._give_up(str(exc) or type(exc).__name__)
            return
        self.state = "ready"

    async def _launch(self, argv: list[str], fd: int, output: Any) -> Any:
        """Start the zygote process (`argv`, inheriting `fd`); a sandbox's template launches
        it in a sandbox instead (sandbox/snapshots.py)."""
        return await asyncio.create_subprocess_exec(
            *argv, pass_fds=(fd,), stdin=asyncio.subprocess.DEVNULL, stdout=output,
            stderr=None if self.log_path is None else output, env=self.env, cwd=self.cwd,
            start_new_session=True)

    async def spawn(self, env: Mapping[str, str], cwd: str | None, cgroup_procs: list[Path],
                    module: str = "ferry._container", *, isolate: dict[str, Any] | None = None,
                    channel: int | None = None) -> tuple[int, asyncio.Future, int, int]:
        """Fork a container running `module` (a function's entrypoint, or a sandbox's
        supervisor): returns its pid, a future of its exit code (None if unknown) and the read
        ends of its stdout and stderr pipes. With `isolate`, the child isolates itself and
        talks to the server over `channel` first (ferry/_container/isolate.py)."""
        if self.state != "ready" or self._sock is None:
            raise ZygoteError("the zygote is not running")
        request_id = next(self._ids)
        request = {"op": "spawn", "id": request_id, "env": dict(env), "cwd": cwd,
                   "cgroup_procs": [str(p) for p in cgroup_procs], "module": module}
        if isolate is not None:
            request["isolate"] = isolate
        if self.children_die_with_it:
            request["die_with_parent"] = True
        payload = json.dumps(request).encode()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        future = asyncio.get_running_loop().create_future()
        self._requests[request_id] = future
        try:
            socket.send_fds(self._sock, [payload], [out_w, err_w, *([] if channel is None else [channel])])
            pid = await asyncio.wait_for(future, SPAWN_TIMEOUT)
        except BaseException as exc:
            self._requests.pop(request_id, None)
            os.close(out_r)
            os.close(err_r)
            if isinstance(exc, (OSError, asyncio.TimeoutError)):
                raise ZygoteError(f"spawn failed: {exc!r}") from None
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        return pid, self._exit_future(pid), out_r, err_r

    @property
    def has_children(self) -> bool:
        """Whether containers it forked are still running (it reaps them and reports exits)."""
        return bool(self._exits)

    def close(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()

    async def stop(self) -> None:
        """Close the connection (the zygote exits on its end) and wait for the process."""
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        self.state = "dead"
        if self._process is None:
            return
        try:
            await asyncio.wait_for(self._process.wait(), 5)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()

    # -- messages from the zygote ---------------------------------------------------------
    def _exit_future(self, pid: int) -> asyncio.Future:
        if pid not in self._exits:
            self._exits[pid] = asyncio.get_running_loop().create_future()
        return self._exits[pid]

    def _on_readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._lost()
                return
            self._handle(json.loads(data))

    def _handle(self, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "ready":
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(message["pid"])
        elif op == "spawned":
            future = self._requests.pop(message["id"], None)
            if future is None or future.done():  # its start gave up waiting: nobody owns it
                for kill in (os.killpg, os.kill) if self.pids_are_ours else ():  # (before its setsid, only the pid exists)
                    try:
                        kill(message["pid"], signal.SIGKILL)
                    except OSError:
                        pass
                return
            self._exit_future(message["pid"])  # before any "exited" that may follow at once
            future.set_result(message["pid"])
        elif op == "failed":
            future = self._requests.pop(message["id"], None)
            if future is not None and not future.done():
                future.set_exception(OSError(message["msg"]))
        elif op == "exited":
            future = self._exits.pop(message["pid"], None)
            if future is None:
                future = asyncio.get_running_loop().create_future()
            if not future.done():
                future.set_result(message["code"])
        elif op == "unsafe" and self._ready is not None and not self._ready.done():
            self._ready.set_exception(RuntimeError(message["msg"]))

    def _lost(self) -> None:
        """The zygote ended: fail what waits on it and end the children it can no longer reap."""
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(RuntimeError("the zygote exited while starting"))
        if self.state == "ready":
            log.warning("container zygote %s (%s) ended; new containers start without it for %gs",
                        self.pid, self.python, RETRY_SECONDS)
        self.state, self.retry_at = "dead", time.monotonic() + RETRY_SECONDS
        for future in self._requests.values():
            if not future.done():
                future.set_exception(OSError("the zygote ended"))
        self._requests.clear()
        for pid, future in self._exits.items():
            try:
                if self.pids_are_ours:  # (a template's children end with its pid namespace)
                    os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            if not future.done():
                future.set_result(None)
        self._exits.clear()

    def _give_up(self, reason: str) -> None:
        self.failure = reason
        log.warning("container zygote for %s unavailable (%s); containers start without it", self.python, reason)
        if self._sock is not None:
            self._lost()
        self.close()
        self.state, self.retry_at = "dead", time.monotonic() + RETRY_SECONDS
