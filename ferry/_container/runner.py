"""The container entrypoint: import user code, run @enter, serve inputs, run @exit.

Threads:
    main      reads frames from the server: inputs, shutdown, answers to requests
    workers   run inputs (as many as the function's `max_inputs`); async user code runs as
              tasks on one event loop thread shared by all workers
    watchdog  enforces `timeout`: reports it and ends the container, which is replaced
"""

from __future__ import annotations

import asyncio
import inspect
import os
import queue
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable

from .. import _config
from .._protocol import FrameSocket, hello
from .._running import current as current_ids, input_ids, register_container, serving, set_current
from .._serialization import deserialize_args, serialize, serialize_exception
from .._partial import enter_methods
from . import snapshot
from .uplink import LogStream, Uplink
from .user_code import apps_in, load_target, materialise_mount

_STOP = object()


class ContainerRunner:
    def __init__(self, uplink: Uplink, welcome: dict[str, Any]) -> None:
        self.uplink = uplink
        self.welcome = welcome
        self.definition: dict[str, Any] = welcome["definition"]
        self.config: dict[str, Any] = self.definition.get("config", {})
        self.inputs: queue.Queue = queue.Queue()
        self.running: dict[int, float] = {}
        self.running_lock = threading.Lock()
        self.draining = threading.Event()
        self.stopped_fetching = threading.Event()
        self.instance: Any = None
        self.target: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        # WebHosts (web.py): {None: host} for a web endpoint function, {method: host} for a class
        # with web endpoints; they share one limit of `max_inputs` requests at once
        self.web_hosts: dict[str | None, Any] = {}
        self._processes: Any = None  # a ProcessHost once `ferry container exec` ran something

    # -- start-up -------------------------------------------------------------------------
    def initialise(self) -> float:
        """Import the code and run @enter (only the `snap=False` hooks in a container restored
        from a memory snapshot, which has done the rest); returns seconds spent in @enter."""
        restored = snapshot.restored(self.definition)
        if restored is None:
            mount = self.definition.get("mount")
            code_root = materialise_mount(mount, self.fetch_blob) if mount else None
        if os.environ.get("FERRY_VOLUME_MOUNTS"):  # volumes hold their files before user code runs
            from . import volumes

            volumes.install(self.uplink.request)
        from .._compat import install_modal_alias

        install_modal_alias(force=True)  # user code runs on Ferry, even with the real `modal` in the image
        os.environ.setdefault("FERRY_IS_CONTAINER", "1")
        self.target = restored.target if restored is not None else load_target(self.definition, code_root)
        self._hydrate_apps()
        started = time.perf_counter()
        if self.definition.get("kind") == "class":
            if restored is not None:
                self.instance = restored.instance
            else:
                self.instance = self._instantiate()
                for name in enter_methods(type(self.instance), snap=True):
                    self._call_sync(getattr(self.instance, name))
            for name in enter_methods(type(self.instance), snap=False):
                self._call_sync(getattr(self.instance, name))
        self._start_web_hosts()
        return time.perf_counter() - started

    def _start_web_hosts(self) -> None:
        """Build each web endpoint's app (and run its lifespan startup) before ready."""
        web = self.definition.get("web")
        endpoints: dict[str | None, dict[str, Any]] = (
            {None: web} if web else dict(self.definition.get("web_methods") or {}))
        if not endpoints:
            return
        from .web import WebHost, request_slots

        slots = request_slots(int(self.config.get("max_inputs") or 1))
        for method, web in endpoints.items():
            host = WebHost(self, web, slots)
            host.start(self.target if method is None else getattr(self.instance, method))
            self.web_hosts[method] = host

    def _web_host(self, frame: dict[str, Any]) -> Any:
        """The host of a web.in frame: the one serving its input."""
        for host in self.web_hosts.values():
            if frame["id"] in host.exchanges:
                return host
        return None

    def _hydrate_apps(self) -> None:
        module = self.definition.get("module")
        objects = self.welcome["objects"]
        for app in apps_in(module) if module else []:
            tags = {*app._functions, *app._classes}
            included = bool(tags) and tags <= set(objects)  # an app another one includes (App.include)
            if app.name == self.welcome["app_name"] or app.name is None or included:
                app._hydrate(self.welcome["app_id"], self.welcome["objects"])

    def _instantiate(self) -> Any:
        from .._cls import bind_parameters

        params = self.welcome.get("params")
        kwargs = deserialize_args(params)[1] if params else {}
        return bind_parameters(self.target, kwargs)

    def _lifecycle_methods(self, flag: str) -> list[Callable]:
        from .._partial import lifecycle_methods

        return [getattr(self.instance, name) for name in lifecycle_methods(type(self.instance), flag)]

    def fetch_blob(self, digest: str) -> bytes:
        return self.uplink.request("blob.get", hash=digest)

    # -- serving --------------------------------------------------------------------------
    def serve(self) -> None:
        batching = self.config.get("max_batch_size")
        workers = 1 if batching else max(1, int(self.config.get("max_inputs") or 1))
        body = self._batch_worker if batching else self._worker
        for n in range(workers):
            thread = threading.Thread(target=body, name=f"ferry-worker-{n}", daemon=True)
            thread.start()
            self._workers.append(thread)
        threading.Thread(target=self._watchdog, name="ferry-watchdog", daemon=True).start()
        while True:
            try:
                frame = self.uplink.recv()
            except Exception as error:
                if not self.draining.is_set():  # on the real stderr: the runtime keeps its tail
                    try:
                        print(f"ferry container: lost the control plane connection ({error!r})",
                              file=sys.__stderr__, flush=True)
                    except OSError:  # the server (and the read end of that pipe) may be gone
                        pass
                self._exit_now(0 if self.draining.is_set() else 1)
            kind = frame.get("t")
            if kind == "res":
                self.uplink.deliver_response(frame)
            elif kind == "push":
                if frame["k"] == "inputs":
                    if self.stopped_fetching.is_set():  # stop_fetching_inputs(): others run them
                        self.uplink.push("requeue", ids=[item["id"] for item in frame["items"]])
                        continue
                    for item in frame["items"]:
                        if self.web_hosts and "asgi" in item["args"]:  # an HTTP request / WebSocket (web.py)
                            self.web_hosts[item.get("method")].submit(item)
                        else:
                            self.inputs.put(item)
                elif frame["k"] == "web.in" and (host := self._web_host(frame)) is not None:
                    host.incoming(frame)
                elif frame["k"] == "reclaim":  # give back inputs not started yet (scheduler.py)
                    self.uplink.push("requeue", ids=take_back(self.inputs, frame["ids"]))
                elif frame["k"] == "shutdown":
                    self.begin_drain()
                elif frame["k"] in ("exec.start", "exec.stdin", "exec.resize", "exec.kill"):  # `ferry container exec` (processes.py)
                    self._process_host().on_push(frame)

    def _process_host(self) -> Any:
        """Commands run in this container by `ferry container exec`, started on the reader
        thread, which lives as long as the container (processes.py)."""
        if self._processes is None:
            from .processes import ProcessHost

            self._processes = ProcessHost(self.uplink)
            self._processes.workdir = os.getcwd()
        return self._processes

    def stop_fetching_inputs(self) -> None:
        """Take no input after those running now: the server stops sending (and drains this
        container, which then runs @exit); the inputs waiting here go back to its queue."""
        if self.stopped_fetching.is_set():
            return
        self.stopped_fetching.set()
        self.uplink.push("stop_fetching")
        with self.inputs.mutex:
            waiting = [item["id"] for item in self.inputs.queue if item is not _STOP]
        self.uplink.push("requeue", ids=take_back(self.inputs, waiting))

    def begin_drain(self) -> None:
        if not self.draining.is_set():
            self.draining.set()
            threading.Thread(target=self._drain, name="ferry-drain", daemon=True).start()

    def _drain(self) -> None:
        for _ in self._workers:
            self.inputs.put(_STOP)
        for thread in self._workers:
            thread.join()
        for host in self.web_hosts.values():
            host.drain()
        if self.instance is not None:
            for hook in self._lifecycle_methods("exit"):
                try:
                    self._call_sync(hook)
                except Exception:
                    traceback.print_exc()
        if os.environ.get("FERRY_VOLUME_MOUNTS"):  # a clean exit commits what the volumes hold
            from . import volumes

            volumes.commit_all()
        self._exit_now(0)

    def _exit_now(self, code: int) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        self.uplink.close()
        os._exit(code)

    def _worker(self) -> None:
        while True:
            item = self.inputs.get()
            if item is _STOP:
                return
            self.uplink.send_outputs([self._execute(item)])

    def _batch_worker(self) -> None:
        max_size = int(self.config["max_batch_size"])
        wait = float(self.config.get("wait_ms") or 0) / 1000
        while True:
            first = self.inputs.get()
            if first is _STOP:
                return
            batch = [first]
            deadline = time.monotonic() + wait
            stop = False
            while len(batch) < max_size:
                remaining = deadline - time.monotonic()
                try:
                    item = self.inputs.get(timeout=max(0.0, remaining)) if remaining > 0 else self.inputs.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            self.uplink.send_outputs(self._execute_batch(batch))
            if stop:
                return

    # -- running one input ----------------------------------------------------------------
    def _callable(self, method: str | None) -> Callable:
        if self.instance is not None:
            if not method:
                raise TypeError("A class was called without a method name.")
            return getattr(self.instance, method)
        return self.target

    def _args(self, item: dict[str, Any]) -> tuple[tuple, dict]:
        payload = item["args"]
        data = payload["data"] if "data" in payload else self.fetch_blob(payload["blob"])
        return deserialize_args(data)

    def _encode_result(self, value: Any) -> dict[str, Any]:
        data = serialize(value, what="return value")
        if len(data) > int(_config.get("inline_payload_limit")):
            return {"blob": self.uplink.request("blob.put", data=data)}
        return {"data": data}

    def _track(self, input_id: int) -> None:
        with self.running_lock:
            self.running[input_id] = time.monotonic()

    def _untrack(self, input_id: int) -> None:
        with self.running_lock:
            self.running.pop(input_id, None)

    def _execute(self, item: dict[str, Any]) -> dict[str, Any]:
        input_id = item["id"]
        self._track(input_id)
        started = time.perf_counter()
        try:
            with serving(input_ids(item)):
                output = self._run(item, input_id)
        except BaseException as error:  # noqa: BLE001 - everything the user raises goes home
            if isinstance(error, KeyboardInterrupt):
                raise
            output = {"status": "error", "exc": serialize_exception(error)}
        finally:
            self._untrack(input_id)
        output.update(id=input_id, dur=time.perf_counter() - started)
        return output

    def _run(self, item: dict[str, Any], input_id: int) -> dict[str, Any]:
        args, kwargs = self._args(item)
        result = self._callable(item.get("method"))(*args, **kwargs)
        if inspect.isgenerator(result) or inspect.isasyncgen(result):
            return {"status": "ok", **self._encode_result(self._stream(input_id, result))}
        if inspect.isawaitable(result):
            result = self._await(result)
        return {"status": "ok", **self._encode_result(result)}

    def _stream(self, input_id: int, generator: Any) -> int:
        count = 0
        if inspect.isasyncgen(generator):
            while True:
                try:
                    value = self._await(generator.__anext__())
                except StopAsyncIteration:
                    break
                self._send_item(input_id, count, value)
                count += 1
        else:
            for value in generator:
                self._send_item(input_id, count, value)
                count += 1
        return count

    def _send_item(self, input_id: int, n: int, value: Any) -> None:
        self.uplink.send_outputs([{"id": input_id, "status": "item", "n": n, **self._encode_result(value)}])

    def _execute_batch(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        started = time.perf_counter()
        for item in batch:
            self._track(item["id"])
        try:
            calls = [self._args(item) for item in batch]
            columns = _batch_columns(calls)
            fn = self._callable(batch[0].get("method"))
            with serving(input_ids(batch[0])):  # a batch reports its first input
                result = fn(*columns)
                if inspect.isawaitable(result):
                    result = self._await(result)
            if not isinstance(result, list) or len(result) != len(batch):
                got = f"a list of {len(result)}" if isinstance(result, list) else f"a {type(result).__name__}"
                inputs = f"{len(batch)} input" + ("s" if len(batch) != 1 else "")
                raise TypeError(
                    f"A @batched function must return a list with one result per input: "
                    f"it got {inputs} and returned {got}."
                )
            outputs = [{"status": "ok", **self._encode_result(value)} for value in result]
        except BaseException as error:  # noqa: BLE001
            if isinstance(error, KeyboardInterrupt):
                raise
            exc = serialize_exception(error)
            outputs = [{"status": "error", "exc": exc} for _ in batch]
        finally:
            for item in batch:
                self._untrack(item["id"])
        duration = time.perf_counter() - started
        for item, output in zip(batch, outputs):
            output.update(id=item["id"], dur=duration / len(batch))
        return outputs

    def event_loop(self) -> asyncio.AbstractEventLoop:
        """The one event loop (on its own thread) that runs async user code and web apps."""
        with self._loop_lock:  # workers start at once: they must all share one loop
            if self._loop is None:
                try:
                    import uvloop  # type: ignore[import-not-found]

                    loop = uvloop.new_event_loop()
                except ImportError:
                    loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="ferry-user-loop", daemon=True).start()
                self._loop = loop
            return self._loop

    def _await(self, awaitable: Any) -> Any:
        ids = current_ids()  # the input this thread serves, for the task that runs its code

        async def wrap() -> Any:
            set_current(ids)
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wrap(), self.event_loop()).result()

    def _call_sync(self, fn: Callable) -> Any:
        result = fn()
        if inspect.isawaitable(result):
            result = self._await(result)
        return result

    # -- timeouts -------------------------------------------------------------------------
    def _watchdog(self) -> None:
        timeout = float(self.config.get("timeout") or _config.get("default_timeout"))
        while True:
            time.sleep(min(0.05, timeout / 10))
            with self.running_lock:
                oldest = min(self.running.values(), default=None)
            if oldest is not None and time.monotonic() - oldest > timeout:
                self._timed_out(timeout)

    def _timed_out(self, timeout: float) -> None:
        unstarted = []
        while True:
            try:
                item = self.inputs.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                unstarted.append(item["id"])
        for host in self.web_hosts.values():
            unstarted.extend(host.unstarted())
        if unstarted:
            self.uplink.push("requeue", ids=unstarted)
        self.uplink.push("timeout", msg=(
            f"timeout: the input ran longer than the function's timeout of {timeout:g}s; "
            "its container was stopped and replaced."))
        self._exit_now(1)


def take_back(inputs: queue.Queue, ids: list[int]) -> list[int]:
    """Remove the inputs named in `ids` that are still waiting in `inputs` (not taken by a
    worker yet); return their ids, in the order they were queued."""
    wanted = set(ids)
    with inputs.mutex:  # atomically: a worker takes either the input or nothing
        waiting = inputs.queue
        taken = [item["id"] for item in waiting if item is not _STOP and item["id"] in wanted]
        if taken:
            kept = [item for item in waiting if item is _STOP or item["id"] not in wanted]
            waiting.clear()
            waiting.extend(kept)
    return taken


def _batch_columns(calls: list[tuple[tuple, dict]]) -> list[list[Any]]:
    """Turn per-input arguments into one list per parameter for a @batched function."""
    first_args, first_kwargs = calls[0]
    if first_kwargs:
        raise TypeError("@batched functions take positional arguments only.")
    width = len(first_args)
    for args, kwargs in calls:
        if kwargs or len(args) != width:
            raise TypeError("Every input of a @batched function must pass the same positional arguments.")
    return [[args[i] for args, _ in calls] for i in range(width)]


def _wait_for_network() -> None:
    """A sandbox's network is connected (by pasta) while Python starts: wait until it is up,
    before any user code runs (server/runtimes/sandbox/bwrap.py, `network_ready_env`)."""
    fd = os.environ.pop("FERRY_NETWORK_READY_FD", None)
    if fd is not None:
        try:
            os.read(int(fd), 1)  # end of file: no network; the server is ending this container
        finally:
            os.close(int(fd))


def main() -> None:
    _wait_for_network()
    url = os.environ["FERRY_SERVER_URL"]
    container_id = os.environ["FERRY_CONTAINER_ID"]
    sock = FrameSocket.connect(url, fingerprint=_config.get("tls_fingerprint") or None)  # (a TLS server's pin)
    sock.send(hello("container", container_id=container_id,
                    token_secret=os.environ.get("FERRY_CONTAINER_SECRET", "")))
    welcome = sock.recv()
    if welcome.get("t") != "welcome":
        print(f"ferry container: refused by the server: {welcome.get('msg')}", file=sys.stderr)
        sys.exit(2)
    uplink = Uplink(sock)
    runner = ContainerRunner(uplink, welcome)
    register_container(runner)
    real_stdout, real_stderr = sys.stdout, sys.stderr
    send_log = lambda stream, text: uplink.push("log", stream=stream, text=text)  # noqa: E731
    sys.stdout = LogStream("stdout", send_log)
    sys.stderr = LogStream("stderr", send_log)

    reader = threading.Thread(target=runner.serve, name="ferry-reader", daemon=True)
    # responses to requests made during start-up (blob fetches) need the reader running,
    # but inputs must wait until @enter is done: the server only sends them after "ready".
    signal.signal(signal.SIGTERM, lambda *_: runner.begin_drain())
    reader.start()
    try:
        enter_seconds = runner.initialise()
    except BaseException as error:  # noqa: BLE001
        payload = serialize_exception(error)
        print(payload["tb"], file=sys.stderr, end="")
        uplink.push("init_failed", exc=payload)
        sys.stdout, sys.stderr = real_stdout, real_stderr
        runner._exit_now(1)
    uplink.push("ready", enter=enter_seconds)
    while True:
        time.sleep(3600)
