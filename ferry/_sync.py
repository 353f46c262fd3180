"""Blocking and `.aio` forms of one async implementation.

All network I/O of a process runs on one background event loop ("the client loop"). A method
written once as `async def _remote(...)` and exposed with `remote = synced(_remote)` can be
called as `f.remote(x)` from plain code or `await f.remote.aio(x)` from any event loop.
Async generators become iterators (`for r in f.map(xs)`) and async iterators
(`async for r in f.map.aio(xs)`).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid = 0


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop where uvloop is installed (a dependency on every platform it supports),
    else asyncio's own."""
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def client_loop() -> asyncio.AbstractEventLoop:
    """The process's client event loop, started on first use (and again after a fork)."""
    global _loop, _loop_pid
    with _lock:
        if _loop is None or _loop_pid != os.getpid() or _loop.is_closed():
            loop = new_event_loop()
            threading.Thread(target=_run_loop, args=(loop,), name="ferry-client-loop", daemon=True).start()
            if _loop is None:
                atexit.register(_stop_client_loop)
            _loop, _loop_pid = loop, os.getpid()
        return _loop


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    loop.run_forever()
    loop.close()


def _stop_client_loop() -> None:
    """At interpreter exit: cancel the client loop's tasks (open connections) and stop it."""
    loop = _loop
    if loop is None or _loop_pid != os.getpid() or not loop.is_running():
        return

    async def cancel_all() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    try:
        asyncio.run_coroutine_threadsafe(cancel_all(), loop).result(timeout=2)
    except Exception:
        pass
    loop.call_soon_threadsafe(loop.stop)
    for thread in threading.enumerate():
        if thread.name == "ferry-client-loop":
            thread.join(timeout=1)


def _check_not_on_loop(loop: asyncio.AbstractEventLoop) -> None:
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return
    if running is loop:
        raise RuntimeError("Blocking Ferry call made on Ferry's own client loop; use `.aio`.")


def run_sync(coro: Awaitable[T]) -> T:
    loop = client_loop()
    _check_not_on_loop(loop)
    future = asyncio.run_coroutine_threadsafe(_as_coroutine(coro), loop)
    try:
        return future.result()
    except KeyboardInterrupt:
        future.cancel()
        raise


async def run_async(coro: Awaitable[T]) -> T:
    loop = client_loop()
    if asyncio.get_running_loop() is loop:
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_as_coroutine(coro), loop))


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable


def iterate_sync(agen: AsyncIterator[T]) -> Iterator[T]:
    """Drive an async iterator on the client loop from blocking code."""
    loop = client_loop()
    _check_not_on_loop(loop)
    try:
        while True:
            future = asyncio.run_coroutine_threadsafe(_anext(agen), loop)
            done, value = future.result()
            if done:
                return
            yield value
    finally:
        asyncio.run_coroutine_threadsafe(_aclose(agen), loop)


async def iterate_async(agen: AsyncIterator[T]) -> AsyncIterator[T]:
    loop = client_loop()
    try:
        while True:
            done, value = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_anext(agen), loop))
            if done:
                return
            yield value
    finally:
        asyncio.run_coroutine_threadsafe(_aclose(agen), loop)


async def _anext(agen: AsyncIterator[T]) -> tuple[bool, Any]:
    try:
        return False, await agen.__anext__()
    except StopAsyncIteration:
        return True, None


async def _aclose(agen: Any) -> None:
    close = getattr(agen, "aclose", None)
    if close is not None:
        await close()


class _Bound:
    def __init__(self, fn: Callable[..., Any], is_gen: bool) -> None:
        self._fn = fn
        self._is_gen = is_gen
        self.__doc__ = fn.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._is_gen:
            return iterate_sync(self._fn(*args, **kwargs))
        return run_sync(self._fn(*args, **kwargs))

    def aio(self, *args: Any, **kwargs: Any) -> Any:
        if self._is_gen:
            return iterate_async(self._fn(*args, **kwargs))
        return run_async(self._fn(*args, **kwargs))


class synced:
    """Descriptor exposing an async method (or async generator method) in both forms."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        import inspect

        self._fn = fn
        self._is_gen = inspect.isasyncgenfunction(fn)
        self.__doc__ = fn.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return _Bound(self._fn, self._is_gen)  # class-level: static-style use
        return _Bound(self._fn.__get__(obj, objtype), self._is_gen)


class _BoundBatches(_Bound):
    """Like `_Bound` for an async generator of lists: callers see the items one by one, while
    each hop between threads carries a whole list."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return (item for batch in iterate_sync(self._fn(*args, **kwargs)) for item in batch)

    async def _flatten(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async for batch in iterate_async(self._fn(*args, **kwargs)):
            for item in batch:
                yield item

    def aio(self, *args: Any, **kwargs: Any) -> Any:
        return self._flatten(*args, **kwargs)


class synced_batches(synced):
    """`synced` for an async generator method that yields lists of results."""

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        fn = self._fn if obj is None else self._fn.__get__(obj, objtype)
        return _BoundBatches(fn, True)
