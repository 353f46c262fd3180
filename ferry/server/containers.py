"""Container lifecycle: start through a runtime, connect, initialise, serve, drain, end.

    STARTING --hello+ready--> READY --shutdown--> DRAINING --exit--> STOPPED
        \\___________________ crash / init error ___________________/

When a container ends, inputs it still held are finished as crashes (and retried by policy);
a container that ends before it became READY counts as an init failure: the queued inputs of
its pool fail with the reason, and further starts back off so a broken import cannot spin.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import secrets
from pathlib import Path
from typing import Any, Callable

from .auth import Authenticator
from .gpu_inventory import GPUAllocator, unplaceable_message
from .logs import LogHub
from .model import Container, ContainerState, OutputStatus, Pool, now
from .runtimes import ContainerSpec, ExitStatus, Runtime, snapshots
from .scheduler import Scheduler
from .secrets import SecretStore
from .store import Store

log = logging.getLogger("ferry.server")

DRAIN_GRACE_SECONDS = 30.0
READ_TO_THE_END_SECONDS = 5.0  # an ended container's connection: how long its last frames may take
MAX_START_BACKOFF = 60.0


def snapshot_request(pool: Pool) -> dict[str, Any]:
    """What a memory snapshot of `pool`'s containers is made of (runtimes/snapshots.py)."""
    definition = pool.definition
    return {"definition": {key: definition.get(key) for key in ("module", "qualname", "kind")},
            "pickled": bool(definition.get("pickled")),
            "params": base64.b64encode(pool.params).decode() if pool.params else None}


class ContainerManager:
    def __init__(self, *, server_url: str, runtime: Runtime, store: Store, scheduler: Scheduler,
                 logs: LogHub, wake_autoscaler: Callable[[Pool], None],
                 secrets: SecretStore, images: Any = None, gpus: GPUAllocator | None = None,
                 auth: Authenticator | None = None, control_socket: Path | None = None) -> None:
        self.server_url = server_url
        self.auth = auth  # mints each container's credential (server/auth.py)
        self.control_socket = control_socket
        self.gpus = gpus or GPUAllocator([])
        self.images = images  # ImageService: the image and mounts of each container
        self.secret_store = secrets
        self.runtime = runtime
        self.store = store
        self.scheduler = scheduler
        self.logs = logs
        self.containers: dict[str, Container] = {}
        self._wake_autoscaler = wake_autoscaler
        self._tasks: set[asyncio.Task] = set()
        self._snapshot_noted: set[str] = set()  # functions told their runtime makes no snapshots

    # -- starting -------------------------------------------------------------------------
    def spec_for(self, container: Container) -> ContainerSpec:
        config = container.pool.definition.get("config", {})
        env = dict(container.pool.definition.get("env") or {})
        if config.get("secrets"):
            # decrypted here, for this container only; never logged (a missing secret fails the start)
            env.update(self.secret_store.environment(config["secrets"], container.pool.tag))
        if self.auth is not None:  # its own credential, valid while it lives (server/auth.py)
            env["FERRY_CONTAINER_SECRET"] = self.auth.container_secret(container.id)
        gpu_type, gpu_indices = container.gpu or (None, [])
        return ContainerSpec(
            container_id=container.id,
            function_id=container.pool.function_id,
            server_url=self.server_url,
            env=env,
            cpu=config.get("cpu"),
            memory_mb=config.get("memory"),
            gpu_type=gpu_type,
            gpu_indices=tuple(gpu_indices),
            volumes=tuple(config.get("volumes") or ()),
            control_socket=self.control_socket,
            block_network=bool(config.get("block_network")),
            snapshot=snapshot_request(container.pool) if config.get("enable_memory_snapshot") else None,
        )

    def start(self, pool: Pool) -> Container | None:
        """Start a container for `pool`; None when the GPUs it needs are all taken (its inputs
        wait in the queue until a container holding them ends)."""
        config = pool.definition.get("config", {})
        unmeetable = self.runtime.unmeetable(config.get("cpu"), config.get("memory"))
        if unmeetable is not None:  # a Ray cluster without a node that large: fail fast
            self.scheduler.fail_queued(pool, {"status": OutputStatus.INIT_ERROR.value,
                                              "msg": f"{pool.tag}: {unmeetable}"})
            return None
        gpu = None
        request = pool.gpu_request()
        if request is not None:
            gpu = self.gpus.allocate(request)
            if gpu is None:
                if not self.gpus.satisfiable(request):  # a Ray cluster without such a node: fail fast
                    self.scheduler.fail_queued(pool, {"status": OutputStatus.INIT_ERROR.value, "msg":
                                                      unplaceable_message(pool.tag, request, self.gpus.describe())})
                return None
        container = Container(id="ct-" + secrets.token_hex(6), pool=pool, gpu=gpu)
        pool.containers[container.id] = container
        self.containers[container.id] = container
        pool.stats.containers_started += 1
        self.store.insert_container(container.id, pool.app.id, pool.function_id)
        task = asyncio.create_task(self._run(container))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return container

    async def _run(self, container: Container) -> None:
        pool = container.pool

        def on_output(stream: str, text: str) -> None:
            if stream == "stderr":
                container.stderr_tail.extend(text.splitlines()[-40:])
            self.logs.add(pool.app.id, pool.tag, container.id, stream, text)

        try:
            spec = self.spec_for(container)
            if self.images is not None:
                spec = await self.images.complete_spec(spec, pool.definition)
            unavailable = self.runtime.snapshots_unavailable() if spec.snapshot is not None else None
            if unavailable:  # the containers start the ordinary way; said once per function
                if (pool.base_id or pool.function_id) not in self._snapshot_noted:  # variants: once for all
                    self._snapshot_noted.add(pool.base_id or pool.function_id)
                    on_output("stderr", snapshots.notice(unavailable))
                spec = dataclasses.replace(spec, snapshot=None)
            container.handle = await self.runtime.start(spec, on_output)
        except Exception as exc:
            log.warning("could not start a container for %s: %s", pool.tag, exc)
            self._ended(container, ExitStatus(code=None), reason=f"{type(exc).__name__}: {exc}")
            return
        if container.state is ContainerState.DRAINING:  # stopped while it was being launched
            container.handle.terminate()
        status = await container.handle.wait()
        if not status.node_lost:
            await self._read_to_the_end(container)
        self._ended(container, status)

    @staticmethod
    async def _read_to_the_end(container: Container) -> None:
        """Its process has ended: let the server read what it sent before it exited (its last
        outputs, a `timeout` or `init_failed` push, stderr lines) before its end is judged, or
        a busy server would blame the input on a bare "exited with code 1". Its connection
        reaches end of file at once (bounded, in case a process it forked still holds it)."""
        conn = container.conn
        if conn is None or conn.closed:
            return
        read = asyncio.get_running_loop().create_future()
        conn.on_close.append(lambda: read.done() or read.set_result(None))
        try:
            await asyncio.wait_for(read, READ_TO_THE_END_SECONDS)
        except asyncio.TimeoutError:
            pass

    # -- messages from the container ------------------------------------------------------
    def welcome(self, container: Container) -> dict[str, Any]:
        pool = container.pool
        return {
            "container_id": container.id,
            "function_id": pool.function_id,
            "app_id": pool.app.id,
            "app_name": pool.app.name,
            "tag": pool.tag,
            "definition": pool.definition,
            "params": pool.params,
            "objects": dict(pool.app.objects),
        }

    def on_ready(self, container: Container, enter: float) -> None:
        """The container imported the code and ran @enter: it takes inputs from now on."""
        if container.state is not ContainerState.STARTING:
            return
        boot = max(0.0, now() - container.launched_at - enter)
        container.state = ContainerState.READY
        container.idle_since = now()
        container.boot_seconds = boot
        container.enter_seconds = enter
        pool = container.pool
        pool.stats.boot_seconds.append(boot)
        pool.stats.enter_seconds.append(enter)
        pool.stats.series.cold_start.observe(boot + enter)
        pool.stats.series.enter.observe(enter)
        pool.init_failures = 0
        pool.last_init_error = None
        self.store.set_container_state(container.id, "ready")
        if not pool.app.live:
            self.shutdown(container, "app stopped")
            return
        self.scheduler.dispatch(pool)
        self._wake_autoscaler(pool)

    def on_init_failed(self, container: Container, error: dict[str, Any]) -> None:
        container.pool.last_init_error = error

    # -- stopping -------------------------------------------------------------------------
    def shutdown(self, container: Container, reason: str) -> None:
        """Ask a container to finish what it holds, run @exit and end."""
        if container.state in (ContainerState.DRAINING, ContainerState.STOPPED):
            return
        container.stop_reason = reason
        if container.conn is None or container.state is ContainerState.STARTING:
            container.state = ContainerState.DRAINING
            if container.handle is not None:
                container.handle.terminate()
            return
        container.state = ContainerState.DRAINING
        self.store.set_container_state(container.id, "draining")
        container.conn.push("shutdown")
        asyncio.get_running_loop().call_later(DRAIN_GRACE_SECONDS, self.kill, container, "drain timed out")

    def stop(self, container: Container, reason: str) -> None:
        """Stop one container at once (`ferry container stop`): every input it holds goes back
        to the front of its pool's queue as the same attempt (as when its node is lost) and
        runs on another container; it drops those it had not started, runs @exit once those it
        is running return (their outputs are ignored), and ends."""
        held = list(container.inflight)
        if held and container.conn is not None and container.state is ContainerState.READY:
            container.conn.push("reclaim", ids=held)  # it takes back those not started (runner.py)
        self.shutdown(container, reason)  # DRAINING from now on: dispatch passes it by
        if held:
            self.scheduler.requeue(container, held)
        self._wake_autoscaler(container.pool)

    def kill(self, container: Container, reason: str) -> None:
        if container.state is ContainerState.STOPPED:
            return
        container.stop_reason = container.stop_reason or reason
        if container.handle is not None:
            container.handle.kill()

    def _ended(self, container: Container, status: ExitStatus, reason: str = "") -> None:
        pool = container.pool
        previous = container.state
        container.state = ContainerState.STOPPED
        reason = reason or container.stop_reason or f"container {status.describe()}"
        if container.inflight and status.node_lost:
            # the platform's loss: every input it held runs again, elsewhere, as the same attempt
            self.scheduler.requeue(container, list(container.inflight))
        elif container.inflight:
            # a container takes its inputs in order and runs at most `running_slots` at once:
            # later ones were never started, so they go back to the queue without an attempt
            unstarted = list(container.inflight)[pool.running_slots():]
            self.scheduler.requeue(container, unstarted)
            self.scheduler.fail_inflight(container, self._crash_item(container, status))
        if previous is ContainerState.STARTING and pool.app.live and not status.node_lost:
            self._init_failed(container, status, reason)
        pool.containers.pop(container.id, None)
        self.containers.pop(container.id, None)
        if container.gpu is not None:
            self.gpus.release(container.gpu[1])
            container.gpu = None
        if container.conn is not None:
            container.conn.close()
        if self.auth is not None:  # its credential dies with it, and every connection it opened
            self.auth.forget_container(container.id)
        self.store.set_container_state(container.id, "stopped", exit_code=status.code, reason=reason)
        self._wake_autoscaler(pool)

    def _crash_item(self, container: Container, status: ExitStatus) -> dict[str, Any]:
        tag = container.pool.tag
        if container.stop_reason.startswith("timeout"):
            return {"status": OutputStatus.TIMEOUT.value, "msg": container.stop_reason}
        if status.oom_killed:
            return {"status": OutputStatus.OOM.value,
                    "msg": f"The container running {tag} {status.describe()}. "
                           f"Raise memory= or use less memory."}
        detail = container.stop_reason or f"{status.describe()}"
        tail = "\n".join(container.stderr_tail)
        msg = f"The container running {tag} {status.describe()} while running this input"
        if detail and detail != status.describe():
            msg += f" ({detail})"
        if tail:
            msg += f".\nLast lines of its stderr:\n{tail}"
        return {"status": OutputStatus.CRASH.value, "msg": msg}

    def _init_failed(self, container: Container, status: ExitStatus, reason: str) -> None:
        pool = container.pool
        pool.init_failures += 1
        pool.next_start_at = now() + min(MAX_START_BACKOFF, 0.5 * 2 ** (pool.init_failures - 1))
        error = pool.last_init_error
        if error is not None:
            item = {"status": OutputStatus.INIT_ERROR.value, "exc": error}
        else:
            tail = "\n".join(container.stderr_tail)
            msg = f"The container for {pool.tag} {status.describe()} before it was ready ({reason})"
            if tail:
                msg += f".\nLast lines of its stderr:\n{tail}"
            item = {"status": OutputStatus.INIT_ERROR.value, "msg": msg}
        self.scheduler.fail_queued(pool, item)

    async def stop_all(self, containers: list[Container], timeout: float = 10.0) -> None:
        """Shut containers down and wait (bounded) until they have ended."""
        for container in containers:
            self.shutdown(container, "app stopped")
        deadline = now() + timeout
        while any(c.state is not ContainerState.STOPPED for c in containers):
            if now() > deadline:
                for container in containers:
                    self.kill(container, "did not stop in time")
                deadline = now() + 5.0
            await asyncio.sleep(0.02)
