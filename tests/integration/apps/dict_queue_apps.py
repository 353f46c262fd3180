"""Functions that use dicts and queues from inside containers (tests/integration/test_dicts.py,
test_queues.py). They import only ferry, as container code does."""

from __future__ import annotations

import queue
import time

import ferry
from ferry.exception import PermissionDeniedError

app = ferry.App("test-dicts-queues")


def _refusals(attempts: dict) -> dict:
    refused = {}
    for what, attempt in attempts.items():
        try:
            attempt()
            refused[what] = "allowed"
        except PermissionDeniedError as error:
            refused[what] = str(error)
    return refused


@app.function()
def use_dict(name: str) -> dict:
    """Read what the caller wrote, write back, and try administrative requests."""
    d = ferry.Dict.from_name(name)
    seen = d["from-outside"]
    d["from-container"] = {"seen": seen}
    d.update({("tuple", 1): 1.5})
    refused = _refusals({"list": lambda: ferry.Dict.objects.list(),
                         "delete": lambda: ferry.Dict.objects.delete(name)})
    return {"seen": seen, "len": d.len(), "refused": refused, "still_there": "from-outside" in d}


@app.function()
def use_dict_by_id(dict_id: str) -> list:
    d = ferry.Dict.from_id(dict_id)
    d.put("written-in-container", 7)
    return sorted(d.keys(), key=repr)


@app.function()
def use_queue(name: str) -> dict:
    q = ferry.Queue.from_name(name)
    got = q.get_many(10, timeout=5)
    q.put_many(["from", "container"], partition="back")
    with ferry.Queue.ephemeral() as own:
        own.put(1)
        own_len = own.len()
    refused = _refusals({"list": lambda: ferry.Queue.objects.list(),
                         "delete": lambda: ferry.Queue.objects.delete(name)})
    return {"got": got, "own_len": own_len, "refused": refused}


@app.function(timeout=120)
def wait_for_item(queue_id: str, timeout: float) -> dict:
    """Block in get() until an item arrives; say when it woke (wall clock, same host)."""
    q = ferry.Queue.from_id(queue_id)
    q.put("waiting", partition="status")
    started = time.time()
    try:
        item = q.get(timeout=timeout)
    except queue.Empty:
        return {"item": None, "woke": time.time(), "waited": time.time() - started}
    return {"item": item, "woke": time.time(), "waited": time.time() - started}


@app.function()
def put_item(queue_id: str, item: object) -> float:
    """Put `item`; the wall-clock time just before the put was sent."""
    q = ferry.Queue.from_id(queue_id)
    sent = time.time()
    q.put(item)
    return sent


sandbox_app = ferry.App("test-dicts-queues-sandbox", image=ferry.Image.debian_slim(python_version="3.11"))


@sandbox_app.function()
def sandbox_round_trip(dict_name: str, queue_name: str) -> dict:
    """In a sandbox (own network namespace): a dict read and write, a blocking queue get, and
    the administrative requests refused."""
    d = ferry.Dict.from_name(dict_name)
    q = ferry.Queue.from_name(queue_name)
    d["from-sandbox"] = d["from-outside"] + 1
    q.put("sandbox ready", partition="status")
    item = q.get(timeout=60)
    refused = _refusals({"dict.list": lambda: ferry.Dict.objects.list(),
                         "queue.delete": lambda: ferry.Queue.objects.delete(queue_name)})
    return {"item": item, "refused": refused}
