"""Functions and how they are called: `.remote`, `.map`, `.starmap`, `.for_each`, `.spawn`,
`.remote_gen`, `.local`, and `FunctionCall` handles of spawned calls."""

from __future__ import annotations

import asyncio
import inspect
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterable

from . import _config
from ._client import Client, ConnectionLost
from ._serialization import deserialize, rebuild_exception, serialize_args
from ._sync import run_sync, synced, synced_batches
from ._unsupported import dashboard_url, unsupported
from .exception import (
    ContainerCrashError,
    ExecutionError,
    FunctionTimeoutError,
    InputCancellation,
    InvalidError,
    OutOfMemoryError,
    TimeoutError,
)

if TYPE_CHECKING:
    from ._app import App

MAP_CHUNK = 512          # inputs per `map.inputs` frame
MAP_WINDOW = 20_000      # inputs in flight per map call: bounds memory on both sides
SPAWN_MAP_BATCH = 256    # `function.spawn` requests in flight at once in `.spawn_map()`


@dataclass(frozen=True)
class FunctionStats:
    """What `Function.get_current_stats()` returns: inputs waiting for a container
    (`backlog`), containers running (`num_total_runners`), inputs running now."""

    backlog: int
    num_total_runners: int
    running_inputs: int = 0


def _new_call_id() -> str:
    return "fc-" + secrets.token_hex(8)


async def encode_args(client: Client, args: tuple, kwargs: dict) -> dict[str, Any]:
    data = serialize_args(args, kwargs)
    if len(data) > int(_config.get("inline_payload_limit")):
        return {"blob": await client.request("blob.put", data=data)}
    return {"data": data}


async def decode_output(client: Client, item: dict[str, Any]) -> Any:
    """The value of a successful output, or raise the error it carries."""
    status = item["status"]
    if status in ("ok", "item"):
        data = item["data"] if "data" in item else await client.request("blob.get", hash=item["blob"])
        return deserialize(data, what="return value")
    raise output_error(item)


def output_error(item: dict[str, Any]) -> BaseException:
    status, msg = item["status"], item.get("msg", "")
    if "exc" in item:
        return rebuild_exception(item["exc"])
    if status == "timeout":
        return FunctionTimeoutError(msg)
    if status == "oom":
        return OutOfMemoryError(msg)
    if status == "crash":
        return ContainerCrashError(msg)
    if status == "cancelled":
        return InputCancellation(msg or "The input was cancelled.")
    return ExecutionError(msg or f"The input failed ({status}).")


async def _gather(*function_calls: "FunctionCall") -> list[Any]:
    """Wait for every call and return their results in order; the first failure is raised
    (the other calls keep running)."""
    for call in function_calls:
        if not isinstance(call, FunctionCall):
            raise InvalidError(f"FunctionCall.gather() takes FunctionCall objects, got {type(call).__name__}.")
    return list(await asyncio.gather(*(call._get() for call in function_calls)))


async def _spawn_one(client: Client, function_id: str, payload: dict[str, Any], method: str | None) -> str:
    """`function.spawn` under an id of ours, sent again after a lost connection (the server
    starts a call id once); returns the call id."""
    call_id = _new_call_id()
    while True:
        try:
            await client.request("function.spawn", function_id=function_id, args=payload, method=method,
                                 call_id=call_id)
            return call_id
        except ConnectionLost:
            await client.reconnect()


async def request_variant(client: Client, function_id: str, overrides: dict[str, Any], image: Any) -> dict[str, Any]:
    """`function.variant` for `with_options`; a new `image` travels in its wire form (its local
    files uploaded first) and the server builds it before answering."""
    config = dict(overrides)
    if image is not None:
        wire = image._wire()
        if wire.blobs:
            missing = await client.request("blob.missing", hashes=list(wire.blobs))
            for digest in missing:
                await client.request("blob.put", data=wire.blobs[digest], hash=digest)
        config["image"] = wire.definition
    return await client.request("function.variant", function_id=function_id, config=config)


class FunctionCall:
    """A handle on a spawned call: `.get()` its result later, even from another process."""

    def __init__(self, call_id: str) -> None:
        self.object_id = call_id

    def __repr__(self) -> str:
        return f"FunctionCall({self.object_id!r})"

    @staticmethod
    def from_id(function_call_id: str) -> "FunctionCall":
        return FunctionCall(function_call_id)

    async def _get(self, timeout: float | None = None) -> Any:
        """Wait for the result (at most `timeout` seconds) and return it, or raise its error."""
        client = await Client.from_env()
        while True:
            try:
                item = await client.request("call.get", call_id=self.object_id, timeout=timeout)
                break
            except ConnectionLost:  # the server restarted: the call is stored, wait for it again
                await client.reconnect()
        if item.get("status") == "pending":
            raise TimeoutError(f"Call {self.object_id} did not finish within {timeout}s.")
        return await decode_output(client, item)

    async def _cancel(self) -> None:
        """Cancel the call: queued inputs are dropped, a running one is stopped."""
        client = await Client.from_env()
        await client.request("call.cancel", call_id=self.object_id)

    async def _get_checked(self, timeout: float | None = None, *, index: int = 0) -> Any:
        if index != 0:
            raise InvalidError(f"FunctionCall.get(index={index}): a spawned call has one input (index 0).")
        return await self._get(timeout)

    async def _num_inputs(self) -> int:
        """How many inputs this call has: 1 for `.spawn()`."""
        return 1

    async def _iter(self, *, start: int = 0, end: int | None = None) -> AsyncIterator[Any]:
        """The outputs of inputs `start` to `end`: the one result of a spawned call."""
        if start != 0 or end not in (None, 1):
            raise InvalidError(f"FunctionCall.iter(start={start}, end={end}): a spawned call has one input.")
        yield await self._get()

    async def _get_call_graph(self) -> list[Any]:
        raise NotImplementedError(
            "FunctionCall.get_call_graph() is not supported by Ferry: the control plane does not record "
            "which call started which. Use current_function_call_id() inside functions to log it.")

    @property
    def client(self) -> "Client":
        """The client this object talks to the server with (the configured server's)."""
        return Client.from_env_sync()

    async def _hydrate(self) -> "FunctionCall":
        return self

    hydrate = synced(_hydrate)
    logs = unsupported("FunctionCall.logs", "use `ferry app logs APP`")
    get_dashboard_url = unsupported("FunctionCall.get_dashboard_url", "the dashboard has no page for calls")
    get = synced(_get_checked)
    cancel = synced(_cancel)
    num_inputs = synced(_num_inputs)
    iter = synced(_iter)
    gather = synced(_gather)  # FunctionCall.gather(*calls), also .aio
    get_call_graph = synced(_get_call_graph)


class Invocable:
    """The calling surface shared by functions and methods of class instances."""

    _is_generator: bool = False

    async def _target(self) -> tuple[Client, str, str | None]:
        """(client, function id, method name) that inputs go to."""
        raise NotImplementedError

    def _local_callable(self) -> Callable[..., Any]:
        raise NotImplementedError

    def _describe(self) -> str:
        return "function"

    def local(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function in this process, as plain Python."""
        return self._local_callable()(*args, **kwargs)

    async def _remote(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function once in a container and return its result."""
        if self._is_generator:
            raise InvalidError(f"{self._describe()} is a generator: call .remote_gen() instead of .remote().")
        client, function_id, method = await self._target()
        payload = await encode_args(client, args, kwargs)
        call_id = _new_call_id()
        while True:  # after a lost connection, the same input again, under the same call id
            try:
                item = await client.request("function.call", function_id=function_id, args=payload,
                                            method=method, call_id=call_id)
                break
            except ConnectionLost:
                await client.reconnect()
        return await decode_output(client, item)

    async def _remote_gen(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """Run a generator function in a container and iterate over what it yields."""
        if not self._is_generator:
            raise InvalidError(f"{self._describe()} is not a generator: call .remote() instead.")
        client, function_id, method = await self._target()
        payload = await encode_args(client, args, kwargs)
        call_id = _new_call_id()
        queue: asyncio.Queue = asyncio.Queue()
        client.output_queues[call_id] = queue
        final = asyncio.ensure_future(client.request(
            "function.call", function_id=function_id, args=payload, method=method, call_id=call_id))
        # items are pushed before the reply, so this marker lands after the last item
        final.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while True:
                batch = await queue.get()
                if batch is None:
                    break
                if isinstance(batch, BaseException):
                    raise batch
                for item in batch:
                    yield await decode_output(client, item)
            item = final.result()
            if item["status"] != "ok":
                raise output_error(item)
        finally:
            client.output_queues.pop(call_id, None)
            if not final.done():
                final.cancel()

    async def _map_batches(
        self, arg_tuples: Iterable[tuple], kwargs: dict[str, Any], order_outputs: bool,
        return_exceptions: bool,
    ) -> AsyncIterator[list[Any]]:
        if self._is_generator:
            raise InvalidError(f"{self._describe()} is a generator; .map() needs a regular function.")
        client, function_id, method = await self._target()
        call_id = _new_call_id()
        queue: asyncio.Queue = asyncio.Queue()
        client.output_queues[call_id] = queue
        state: dict[str, Any] = {"received": 0, "total": None}
        window = asyncio.Event()
        live = asyncio.Event()  # clear while the call is resumed on a new connection
        live.set()
        unanswered: dict[int, list[Any]] = {}  # inputs sent, no output yet: sent again if the server lacks them
        # outputs that arrived: every index below got_below, and those in got (a resumed call
        # may push one twice; memory stays bounded by the inputs in flight)
        got: set[int] = set()
        got_below = 0
        complete = False

        def send(items: list[list[Any]], last: bool = False) -> None:
            frame: dict[str, Any] = {"t": "push", "k": "map.inputs", "call": call_id, "items": items}
            if last:
                frame["last"] = True
            try:
                client.send(frame)
            except ConnectionError:
                pass  # resume() sends them again

        async def encode(args: tuple) -> dict[str, Any]:
            while True:
                try:
                    return await encode_args(client, args, kwargs)
                except ConnectionLost:
                    await client.reconnect()

        async def feed() -> None:
            try:
                chunk: list[list[Any]] = []
                idx = 0
                for args in arg_tuples:
                    chunk.append([idx, await encode(tuple(args)), method])
                    idx += 1
                    if len(chunk) >= MAP_CHUNK:
                        await live.wait()
                        unanswered.update((item[0], item) for item in chunk)
                        send(chunk)
                        chunk = []
                        try:
                            await client.drain()
                        except (ConnectionError, OSError):
                            pass
                        while idx - state["received"] > MAP_WINDOW:
                            window.clear()
                            await window.wait()
                await live.wait()
                unanswered.update((item[0], item) for item in chunk)
                state["total"] = idx
                send(chunk, last=True)
                queue.put_nowait([])  # wake the reader so it can see the total
            except BaseException as error:  # noqa: BLE001 - e.g. an unpicklable argument
                queue.put_nowait(error)

        async def resume() -> int:
            """After a lost connection: reconnect, tell the server which outputs we have, send
            again the inputs it does not hold; returns the connection's generation."""
            live.clear()
            while True:
                try:
                    await client.reconnect()
                    found = await client.request("call.resume", call_id=call_id, function_id=function_id,
                                                 have=sorted(got), have_below=got_below)
                    break
                except ConnectionLost:
                    continue
            generation = client.generation
            known = set(found["known"])
            again = [item for idx, item in sorted(unanswered.items()) if idx not in known]
            for start in range(0, len(again), MAP_CHUNK):
                send(again[start:start + MAP_CHUNK])
            if state["total"] is not None:
                send([], last=True)
            live.set()
            return generation

        try:
            try:
                await client.request("function.map", function_id=function_id, call_id=call_id)
                attached = client.generation
            except ConnectionLost:
                attached = await resume()
            feeder = asyncio.ensure_future(feed())
            buffered: dict[int, Any] = {}
            next_idx = 0
            while state["total"] is None or state["received"] < state["total"]:
                batch = await queue.get()
                if isinstance(batch, ConnectionLost):
                    if batch.generation >= attached:  # (not one of a connection resumed already)
                        attached = await resume()
                    continue
                if isinstance(batch, BaseException):
                    raise batch
                ready: list[Any] = []
                fresh: list[int] = []
                for item in batch:
                    if item["idx"] < got_below or item["idx"] in got:
                        continue
                    got.add(item["idx"])
                    while got_below in got:
                        got.remove(got_below)
                        got_below += 1
                    fresh.append(item["idx"])
                    unanswered.pop(item["idx"], None)
                    state["received"] += 1
                    try:
                        value = await decode_output(client, item)
                    except Exception as error:
                        if not return_exceptions:
                            raise
                        value = error
                    if order_outputs:
                        buffered[item["idx"]] = value
                    else:
                        ready.append(value)
                if fresh:
                    client.ack(call_id, fresh)
                while next_idx in buffered:
                    ready.append(buffered.pop(next_idx))
                    next_idx += 1
                window.set()
                if ready:
                    yield ready
            complete = True
        finally:
            client.output_queues.pop(call_id, None)
            if "feeder" in locals() and not feeder.done():
                feeder.cancel()
            if not complete and client.connected:
                try:
                    await client.request("call.cancel", call_id=call_id)
                except Exception:
                    pass

    async def _map(self, *input_iterators: Iterable[Any], kwargs: dict[str, Any] | None = None,
                   order_outputs: bool = True, return_exceptions: bool = False) -> AsyncIterator[list[Any]]:
        """Run the function over the zipped inputs in parallel; yield results (in order unless
        `order_outputs=False`). With `return_exceptions=True`, failures are yielded as values."""
        if not input_iterators:
            raise InvalidError(".map() needs at least one iterable of inputs.")
        async for batch in self._map_batches(zip(*input_iterators), kwargs or {}, order_outputs, return_exceptions):
            yield batch

    async def _starmap(self, input_iterator: Iterable[tuple], *, kwargs: dict[str, Any] | None = None,
                       order_outputs: bool = True, return_exceptions: bool = False) -> AsyncIterator[list[Any]]:
        """Like map, with each input an argument tuple: `f.starmap([(1, 2), (3, 4)])`."""
        async for batch in self._map_batches(input_iterator, kwargs or {}, order_outputs, return_exceptions):
            yield batch

    async def _for_each(self, *input_iterators: Iterable[Any], kwargs: dict[str, Any] | None = None,
                        ignore_exceptions: bool = False) -> None:
        """Run the function over the inputs for their side effects; results are discarded."""
        async for _ in self._map_batches(zip(*input_iterators), kwargs or {}, False, ignore_exceptions):
            pass

    async def _spawn(self, *args: Any, **kwargs: Any) -> FunctionCall:
        """Start the function without waiting; returns a FunctionCall to `.get()` later."""
        client, function_id, method = await self._target()
        payload = await encode_args(client, args, kwargs)
        return FunctionCall(await _spawn_one(client, function_id, payload, method))

    async def _spawn_map(self, *input_iterators: Iterable[Any], kwargs: dict[str, Any] | None = None) -> None:
        """Spawn one call per input (zipped as `.map` zips them) and return at once; each input
        is stored by the server before this returns, as `.spawn()` stores its call. The results
        are not returned (write them somewhere, e.g. a Dict or a Volume)."""
        if not input_iterators:
            raise InvalidError(".spawn_map() needs at least one iterable of inputs.")
        if self._is_generator:
            raise InvalidError(f"{self._describe()} is a generator; .spawn_map() needs a regular function.")
        client, function_id, method = await self._target()

        async def spawn_one(args: tuple) -> None:
            await _spawn_one(client, function_id, await encode_args(client, args, kwargs or {}), method)

        pending: list[Any] = []
        for args in zip(*input_iterators):
            pending.append(spawn_one(tuple(args)))
            if len(pending) >= SPAWN_MAP_BATCH:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)

    async def _experimental_spawn_map(self, *input_iterators: Iterable[Any],
                                      kwargs: dict[str, Any] | None = None) -> FunctionCall:
        raise NotImplementedError(
            "Function.experimental_spawn_map() is not supported by Ferry (one FunctionCall for many "
            "inputs); use .spawn_map() to start them, or .spawn() per input to keep a FunctionCall each.")

    remote = synced(_remote)
    remote_gen = synced(_remote_gen)
    spawn_map = synced(_spawn_map)
    experimental_spawn_map = synced(_experimental_spawn_map)
    map = synced_batches(_map)
    starmap = synced_batches(_starmap)
    for_each = synced(_for_each)
    spawn = synced(_spawn)


class Function(Invocable):
    """A function of an app, created by `@app.function()` or looked up with `from_name`."""

    def __init__(self, raw_f: Callable[..., Any] | None, *, app: "App | None", tag: str,
                 config: dict[str, Any], definition_extra: dict[str, Any] | None = None) -> None:
        self._ferry_raw = raw_f
        self._app = app
        self._tag = tag
        self._config = config
        self._extra = definition_extra or {}
        self._function_id: str | None = None
        self._is_generator = bool(raw_f and (inspect.isgeneratorfunction(raw_f) or inspect.isasyncgenfunction(raw_f)))
        self._lookup: tuple[str, str] | None = None
        self._web_url: str | None = None  # set when the app is published (web endpoints only)
        self._variant_of: tuple[Function, dict[str, Any], Any] | None = None  # (parent, overrides, image)
        self._variant_cache: tuple[str, str] | None = None  # (parent id, variant id)
        if raw_f is not None:
            self.__doc__ = raw_f.__doc__
            self.__name__ = getattr(raw_f, "__name__", tag)
            self.__qualname__ = getattr(raw_f, "__qualname__", tag)
            self.__module__ = getattr(raw_f, "__module__", "")

    def __repr__(self) -> str:
        return f"<ferry.Function {self._tag}>"

    def _describe(self) -> str:
        return f"Function {self._tag!r}"

    @property
    def object_id(self) -> str | None:
        return self._function_id

    @staticmethod
    def from_name(app_name: str, name: str) -> "Function":
        """A handle on function `name` of the deployed app `app_name` (looked up on first use)."""
        function = Function(None, app=None, tag=name, config={})
        function._lookup = (app_name, name)
        return function

    def with_options(self, **options: Any) -> "Function":
        """A variant of this function with some options changed (timeout, retries, ...)."""
        from ._resources import function_config, reject_schedule

        reject_schedule(options, "with_options()")
        image = options.pop("image", None)
        overrides = {k: v for k, v in function_config(image=image, **options, stacklevel=4).items() if v is not None}
        if self._config.get("max_batch_size"):
            from ._partial import check_batching

            check_batching(f"Function {self._tag}", overrides.get("max_inputs"))
        variant = Function(self._ferry_raw, app=self._app, tag=self._tag, config={**self._config, **overrides},
                           definition_extra=self._extra)
        variant._variant_of = (self, overrides, image)
        variant._ferry_image = image if image is not None else getattr(self, "_ferry_image", None)
        return variant

    def with_concurrency(self, *, max_inputs: int, target_inputs: int | None = None) -> "Function":
        """A variant of this function whose containers each run up to `max_inputs` inputs at once
        (as `@concurrent` would)."""
        from ._partial import concurrent

        concurrent(max_inputs=max_inputs, target_inputs=target_inputs)  # the same checks
        return self._variant({"max_inputs": max_inputs, "target_inputs": target_inputs}, "with_concurrency")

    def with_batching(self, *, max_batch_size: int, wait_ms: int) -> "Function":
        """A variant of a `@batched` function with another batch size and wait."""
        from ._partial import batched

        batched(max_batch_size=max_batch_size, wait_ms=wait_ms)  # the same checks
        if not self._config.get("max_batch_size"):
            raise InvalidError(f"{self._describe()}.with_batching(): only a @batched function can change its "
                               "batching (its code takes lists of inputs).")
        return self._variant({"max_batch_size": max_batch_size, "wait_ms": wait_ms}, "with_batching")

    def _variant(self, overrides: dict[str, Any], what: str) -> "Function":
        if self._config.get("max_batch_size") and overrides.get("max_inputs"):
            from ._partial import check_batching

            check_batching(f"Function {self._tag}", overrides["max_inputs"])
        variant = Function(self._ferry_raw, app=self._app, tag=self._tag, config={**self._config, **overrides},
                           definition_extra=self._extra)
        variant._variant_of = (self, overrides, None)
        return variant

    @property
    def client(self) -> "Client":
        """The client this object talks to the server with (the configured server's)."""
        return Client.from_env_sync()

    @property
    def app(self) -> "App | None":
        """The app this function belongs to (None for one looked up by name)."""
        return self._app

    async def _hydrate_remote(self) -> "Function":
        await self._target()
        return self

    hydrate = synced(_hydrate_remote)

    def get_dashboard_url(self) -> str:
        """The dashboard page of this function's app."""
        if self._lookup is not None:
            return run_sync(dashboard_url(f"/apps/{self._lookup[0]}"))
        if self._app is None or self._app._app_id is None:
            raise ExecutionError(f"{self._describe()} is not running: its app has no dashboard page yet.")
        return run_sync(dashboard_url(f"/apps/{self._app._app_id}"))

    @staticmethod
    def from_id(function_id: str, client: Any = None) -> "Function":
        """A handle on the function with this `object_id` (of a running or deployed app). Calls
        go straight to it; `.remote_gen()` needs `Function.from_name`, which learns its kind."""
        if client is not None:
            raise NotImplementedError("Function.from_id(client=...) is not supported by Ferry: functions use "
                                      "the configured server.")
        if not isinstance(function_id, str) or not function_id.startswith("fu-"):
            raise InvalidError(f"{function_id!r} is not a function id (they look like 'fu-...').")
        function = Function(None, app=None, tag=function_id, config={})
        function._function_id = function_id
        return function
    info = unsupported("Function.info", "use `ferry app show APP --json`")
    logs = unsupported("Function.logs", "use `ferry app logs APP --function NAME`")
    metrics = unsupported("Function.metrics", "see the dashboard and `ferry run --profile`")
    stats = unsupported("Function.stats", "use Function.get_current_stats()")
    autoscaler = unsupported("Function.autoscaler", "use Function.update_autoscaler()")

    def _hydrate(self, function_id: str | None) -> None:
        """Bind to the server-side function (None: unbind, e.g. when the app run ended)."""
        self._function_id = function_id

    async def _target(self) -> tuple[Client, str, str | None]:
        client = await Client.from_env()
        if self._variant_of is not None:
            # a variant follows its parent: a new run of the app means a new variant
            parent, overrides, image = self._variant_of
            _, parent_id, _ = await parent._target()
            if self._variant_cache is None or self._variant_cache[0] != parent_id:
                found = await request_variant(client, parent_id, overrides, image)
                self._variant_cache = (parent_id, found["function_id"])
            return client, self._variant_cache[1], None
        if self._function_id is None:
            if self._lookup is not None:
                found = await client.request("function.lookup", app=self._lookup[0], tag=self._lookup[1])
                if found["definition"].get("kind") == "class":
                    raise InvalidError(f"{self._lookup[1]!r} is a class; use Cls.from_name().")
                self._is_generator = bool(found["definition"].get("is_generator"))
                self._web_url = found.get("web_path_url") or found.get("web_url")
                self._function_id = found["function_id"]
            else:
                raise ExecutionError(
                    f"Function {self._tag!r} is not running: its app has not started. Call it "
                    "inside `with app.run():`, or run the script with `ferry run`."
                )
        return client, self._function_id, None

    def get_web_url(self) -> str | None:
        """The URL of this web endpoint, or None for a function without a web decorator. Known
        once its app runs or is deployed (or looked up). It is the path-based form
        `http://127.0.0.1:PORT/_/LABEL/`, which every HTTP client resolves (Python's own resolver
        does not map `LABEL.localhost`); `ferry run`/`serve`/`deploy` also print the host-based
        form for browsers."""
        if self._web_url is None and self._lookup is not None:
            run_sync(self._target())
        if self._web_url is None and self._extra.get("web"):
            raise ExecutionError(f"{self._describe()} has no URL yet: its app is not running. Start it "
                                 "with `ferry serve`, `ferry run`, `ferry deploy` or `with app.run():`.")
        return self._web_url

    def _local_callable(self) -> Callable[..., Any]:
        if self._ferry_raw is None:
            raise ExecutionError(f"{self._describe()} was looked up by name; it has no local code to run.")
        return self._ferry_raw

    async def _update_autoscaler(self, *, min_containers: int | None = None, max_containers: int | None = None,
                                 buffer_containers: int | None = None,
                                 scaledown_window: float | None = None) -> None:
        """Change autoscaling of a running or deployed function without redeploying it."""
        from ._resources import function_config

        settings = {k: v for k, v in function_config(
            min_containers=min_containers, max_containers=max_containers,
            buffer_containers=buffer_containers, scaledown_window=scaledown_window).items()
            if v is not None and k in ("min_containers", "max_containers", "buffer_containers", "scaledown_window")}
        client, function_id, _ = await self._target()
        await client.request("function.update_autoscaler", function_id=function_id, settings=settings)

    async def _get_current_stats(self) -> FunctionStats:
        """Inputs queued and containers running for this function right now."""
        client, function_id, _ = await self._target()
        found = await client.request("function.stats", function_id=function_id)
        return FunctionStats(backlog=found["backlog"], num_total_runners=found["num_total_runners"],
                             running_inputs=found.get("running_inputs", 0))

    update_autoscaler = synced(_update_autoscaler)
    get_current_stats = synced(_get_current_stats)

    def definition(self, mount: dict[str, Any] | None, module: str) -> dict[str, Any]:
        """What the control plane stores and containers receive for this function."""
        raw = self._ferry_raw
        assert raw is not None
        return {
            "kind": "function",
            "module": module,
            "qualname": raw.__qualname__,
            "mount": mount,
            "is_generator": self._is_generator,
            "is_async": inspect.iscoroutinefunction(raw) or inspect.isasyncgenfunction(raw),
            "config": self._config,
            **self._extra,
        }
