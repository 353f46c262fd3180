"""ferry.Queue against a real server and real containers: every method (blocking and `.aio`),
partitions, blocking and wake-ups (a get blocked in one container wakes on a put from another),
what containers may not do, limits, TTLs, durability across a SIGKILL of the server, and
`ferry queue`."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import threading
import time
import uuid

import pytest

import ferry
from ferry.exception import InvalidError, NotFoundError

from ..conftest import ServerProcess, run_cli
from .apps.dict_queue_apps import app, put_item, use_queue, wait_for_item


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_every_method(server):
    name = _unique("test-queue")
    q = ferry.Queue.from_name(name, create_if_missing=True)
    q.put(1)
    q.put_many([2, {"three": 3}])
    q.put("p1", partition="p")
    q.put_many(["p2", "p3"], partition="p")
    assert q.len() == 3 and q.len(partition="p") == 3 and q.len(total=True) == 6
    assert list(q.iterate()) == [1, 2, {"three": 3}] and q.len() == 3  # iterate takes nothing
    assert list(q.iterate(partition="p")) == ["p1", "p2", "p3"]
    assert q.get() == 1
    assert q.get_many(10) == [2, {"three": 3}]
    assert q.get(block=False) is None and q.get_many(5, block=False) == []
    with pytest.raises(queue.Empty):
        q.get(timeout=0.1)
    with pytest.raises(queue.Empty):
        q.get_many(3, timeout=0)
    assert q.get(partition="p") == "p1"
    q.clear(partition="p")
    assert q.len(partition="p") == 0
    q.put_many([1, 2], partition="a")
    q.put(3)
    q.clear()
    assert q.len() == 0 and q.len(total=True) == 2
    q.clear(all=True)
    assert q.len(total=True) == 0
    info = q.info()
    assert info.name == name and q.object_id.startswith("qu-") and q.name == name
    assert ferry.Queue.validate_partition_key("abc") == b"abc" and ferry.Queue.validate_partition_key(None) == b""
    assert name in [x.name for x in ferry.Queue.objects.list()]
    ferry.Queue.objects.delete(name)
    with pytest.raises(NotFoundError):
        ferry.Queue.from_name(name).len()


def test_fifo_order_and_each_item_goes_to_one_getter(server):
    with ferry.Queue.ephemeral() as q:
        q.put_many(list(range(1000)))
        got: list[int] = []
        lock = threading.Lock()

        def take() -> None:
            while True:
                items = q.get_many(7, block=False)
                if not items:
                    return
                with lock:
                    got.extend(items)

        threads = [threading.Thread(target=take) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(got) == list(range(1000))


def test_a_blocked_get_wakes_on_a_put_from_another_client(server):
    """(How fast it wakes is measured by bench/queues.py, not asserted here.)"""
    with ferry.Queue.ephemeral() as q:
        woke: list[object] = []

        def getter() -> None:
            woke.append(q.get(timeout=60))

        thread = threading.Thread(target=getter)
        thread.start()
        time.sleep(0.3)  # the get is waiting on the server
        other = ferry.Queue.from_id(q.object_id)
        other.put("hello")
        thread.join(timeout=60)
        assert woke == ["hello"]  # woken by the put, not by its timeout (that raises queue.Empty)


def test_blocked_puts_wait_for_room_then_raise_full(server):
    with ferry.Queue.ephemeral() as q:
        q.put_many(list(range(5000)), partition="full")
        with pytest.raises(queue.Full):
            q.put("x", partition="full", block=False)
        started = time.monotonic()
        with pytest.raises(queue.Full):
            q.put("x", partition="full", timeout=0.2)
        assert time.monotonic() - started >= 0.2  # it waited its timeout for room (not a speed bound)
        threading.Timer(0.2, lambda: q.get(partition="full")).start()
        q.put("fits", partition="full", timeout=10)  # woken by the get
        assert q.len(partition="full") == 5000


def test_aio_forms_and_ephemeral_async(server):
    async def main() -> None:
        async with ferry.Queue.ephemeral() as q:
            await q.put.aio(1)
            await q.put_many.aio([2, 3], partition="x")
            assert await q.len.aio() == 1 and await q.len.aio(total=True) == 3
            assert [v async for v in q.iterate.aio(partition="x")] == [2, 3]
            assert await q.get.aio() == 1
            assert await q.get_many.aio(5, partition="x") == [2, 3]
            waiter = asyncio.ensure_future(q.get.aio(timeout=10))
            await asyncio.sleep(0.1)
            await q.put.aio("late")
            assert await waiter == "late"
            await q.put.aio(4)
            await q.clear.aio()
            assert await q.len.aio() == 0
            assert (await q.info.aio()).name is None
            with pytest.raises(queue.Empty):
                await q.get.aio(timeout=0.05)
        name = _unique("test-queue-aio")
        await ferry.Queue.objects.create.aio(name)
        assert name in [x.name for x in await ferry.Queue.objects.list.aio()]
        await ferry.Queue.objects.delete.aio(name)

    asyncio.run(main())


def test_a_cancelled_get_takes_nothing_later(server):
    async def main() -> None:
        async with ferry.Queue.ephemeral() as q:
            waiting = asyncio.ensure_future(q.get.aio(timeout=30))
            await asyncio.sleep(0.2)  # blocked on the server
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await asyncio.sleep(0.1)
            await q.put.aio("kept")
            assert await q.get.aio(timeout=5) == "kept"
            try:
                await asyncio.wait_for(q.get.aio(), timeout=0.2)
            except asyncio.TimeoutError:
                pass
            await q.put.aio("kept too")
            assert await q.len.aio() == 1

    asyncio.run(main())


def test_a_get_waiting_on_a_deleted_queue_fails_clearly(server):
    name = _unique("test-queue-deleted")
    q = ferry.Queue.from_name(name, create_if_missing=True)
    q.hydrate()
    errors: list[BaseException] = []

    def getter() -> None:
        try:
            q.get(timeout=30)
        except BaseException as error:  # noqa: BLE001 (collected for the assertion)
            errors.append(error)

    thread = threading.Thread(target=getter)
    thread.start()
    time.sleep(0.3)
    ferry.Queue.objects.delete(name)
    thread.join(timeout=10)
    assert not thread.is_alive() and isinstance(errors[0], NotFoundError), errors


def test_iterate_waits_item_poll_timeout_for_more(server):
    with ferry.Queue.ephemeral() as q:
        q.put(1)
        threading.Timer(0.2, lambda: q.put(2)).start()
        started = time.monotonic()
        assert list(q.iterate(item_poll_timeout=1.0)) == [1, 2]
        assert time.monotonic() - started >= 1.0  # it waited item_poll_timeout after the last item


def test_containers_use_queues_but_may_not_list_or_delete(server):
    name = _unique("test-queue-container")
    q = ferry.Queue.from_name(name, create_if_missing=True)
    q.put_many(["a", "b"])
    with app.run(show_logs=False):
        result = use_queue.remote(name)
    assert result["got"] == ["a", "b"] and result["own_len"] == 1
    assert q.get_many(2, partition="back") == ["from", "container"]
    for what in ("list", "delete"):
        assert "not permitted from inside a container" in result["refused"][what], result["refused"]
    ferry.Queue.objects.delete(name)


def test_a_get_blocked_in_one_container_wakes_on_a_put_from_another(server):
    with ferry.Queue.ephemeral() as q, app.run(show_logs=False):
        waiting = wait_for_item.spawn(q.object_id, 60)
        assert q.get(partition="status", timeout=60) == "waiting"
        time.sleep(0.2)  # its get() is blocked on the server now
        put_item.remote(q.object_id, {"job": 1})
        result = waiting.get(timeout=60)
        assert result["item"] == {"job": 1}  # woken by the put (its own 60 s timeout raises queue.Empty)


def test_limits_fail_clearly(server):
    with ferry.Queue.ephemeral() as q:
        with pytest.raises(InvalidError, match="1 MiB per item"):
            q.put(b"x" * (1024 * 1024 + 1))
        with pytest.raises(InvalidError, match="at most 5,000 items"):
            q.put_many(list(range(5001)))
        with pytest.raises(InvalidError, match="1 to 64 bytes"):
            q.put(1, partition="p" * 65)
        with pytest.raises(InvalidError, match="1 to 64 bytes"):
            q.get(partition="")
        with pytest.raises(InvalidError, match="not both"):
            q.len(partition="a", total=True)
        with pytest.raises(InvalidError, match="not both"):
            q.clear(partition="a", all=True)
        with pytest.raises(InvalidError, match="partition_ttl"):
            q.put(1, partition_ttl=0)
        with pytest.raises(InvalidError, match="n_values"):
            q.get_many(0)
        with pytest.raises(InvalidError, match="timeout"):
            q.get(timeout=-1)
    with pytest.raises(InvalidError, match="Invalid Queue name"):
        ferry.Queue.from_name("bad name")
    with pytest.raises(NotImplementedError, match="environment_name"):
        ferry.Queue.ephemeral(environment_name="prod")


def test_a_partition_is_emptied_partition_ttl_after_its_last_put(server):
    with ferry.Queue.ephemeral() as q:
        q.put(1, partition="short", partition_ttl=1)
        q.put(2, partition="long")
        assert q.len(partition="short") == 1
        time.sleep(1.2)
        assert q.len(total=True) == 1
        assert q.len(partition="short") == 0 and q.get(partition="short", block=False) is None
        assert q.len(partition="long") == 1


def test_contents_survive_a_sigkill_of_the_server(tmp_path, monkeypatch):
    home = tmp_path / "home"
    proc = ServerProcess.start(home)
    try:
        monkeypatch.setenv("FERRY_HOME", str(home))
        proc.use(monkeypatch)
        q = ferry.Queue.from_name("durable", create_if_missing=True)
        q.put_many(list(range(100)))
        q.put("p", partition="side")
        assert q.get_many(10) == list(range(10))  # taken: gone for good
        with ferry.Queue.ephemeral() as eph:
            eph.put(1)
            ephemeral_id = eph.object_id
            os.killpg(proc.process.pid, signal.SIGKILL)
            proc.process.wait()
            proc = ServerProcess.start(home)
            proc.use(monkeypatch)
            q = ferry.Queue.from_name("durable")
            assert q.len() == 90 and q.get_many(100) == list(range(10, 100))
            assert q.get(partition="side") == "p"
            with pytest.raises(NotFoundError):  # ephemeral queues end with the server's connections
                ferry.Queue.from_id(ephemeral_id).len()
    finally:
        proc.stop(signal.SIGKILL)


def test_queue_cli(server):
    name = _unique("test-queue-cli")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return run_cli(["queue", *args], server, env={"COLUMNS": "300"})

    assert cli("create", name).returncode == 0
    assert "already exists" in cli("create", name).stderr
    q = ferry.Queue.from_name(name)
    q.put_many(["a", "b", "c"])
    q.put("x", partition="p")
    assert name in cli("list").stdout
    row = next(r for r in json.loads(cli("list", "--json").stdout) if r["name"] == name)
    assert row["items"] == 4 and row["partitions"] == 2
    assert cli("len", name).stdout.strip() == "3"
    assert cli("len", name, "--partition", "p").stdout.strip() == "1"
    assert cli("len", name, "--total").stdout.strip() == "4"
    assert cli("peek", name).stdout.split() == ["'a'"]
    assert cli("peek", name, "2").stdout.split() == ["'a'", "'b'"]
    assert json.loads(cli("peek", name, "5", "--json").stdout) == ["a", "b", "c"]
    assert cli("peek", name, "--partition", "p").stdout.split() == ["'x'"]
    assert q.len() == 3  # peek takes nothing
    assert cli("clear", name, "--yes").returncode == 0 and q.len() == 0 and q.len(total=True) == 1
    assert cli("clear", name, "--all", "--yes").returncode == 0 and q.len(total=True) == 0
    assert cli("delete", name, "--yes").returncode == 0
    assert "not found" in cli("len", name).stderr


def test_dicts_and_queues_in_sandbox_containers(on_sandbox):
    from .apps.dict_queue_apps import sandbox_app, sandbox_round_trip

    d = ferry.Dict.from_name(_unique("test-dict-sandbox"), create_if_missing=True)
    q = ferry.Queue.from_name(_unique("test-queue-sandbox"), create_if_missing=True)
    d["from-outside"] = 1
    with sandbox_app.run(show_logs=False):
        call = sandbox_round_trip.spawn(d.name, q.name)
        assert q.get(partition="status", timeout=120) == "sandbox ready"
        q.put({"job": "for the sandbox"})
        result = call.get(timeout=60)
    assert result["item"] == {"job": "for the sandbox"} and d["from-sandbox"] == 2
    assert all("not permitted from inside a container" in text for text in result["refused"].values()), result
