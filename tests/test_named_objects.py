"""Dict and Queue without a server: the reference platform's names and signatures, and the
checks made before anything is sent."""

from __future__ import annotations

import inspect
import pickle

import pytest

import ferry
from ferry.exception import InvalidError

# Public members of the reference client's Dict and Queue (version 1.6.4), with the parameters
# of each method (self and cls left out).
REFERENCE = {
    ferry.Dict: {
        "clear": [], "contains": ["key"], "ephemeral": ["client", "environment_name", "_heartbeat_sleep"],
        "from_id": ["dict_id", "client"], "from_name": ["name", "environment_name", "create_if_missing", "client"],
        "get": ["key", "default"], "get_dashboard_url": [], "hydrate": ["client"], "info": [], "items": [],
        "keys": [], "len": [], "pop": ["key", "default"], "put": ["key", "value", "skip_if_exists"],
        "update": ["other", "kwargs"], "values": [],
        "client": None, "name": None, "object_id": None, "objects": None,
    },
    ferry.Queue: {
        "clear": ["partition", "all"], "ephemeral": ["client", "environment_name", "_heartbeat_sleep"],
        "from_id": ["queue_id", "client"], "from_name": ["name", "environment_name", "create_if_missing", "client"],
        "get": ["block", "timeout", "partition"], "get_dashboard_url": [],
        "get_many": ["n_values", "block", "timeout", "partition"], "hydrate": ["client"], "info": [],
        "iterate": ["partition", "item_poll_timeout"], "len": ["partition", "total"],
        "put": ["v", "block", "timeout", "partition", "partition_ttl"],
        "put_many": ["vs", "block", "timeout", "partition", "partition_ttl"],
        "validate_partition_key": ["partition"],
        "client": None, "name": None, "object_id": None, "objects": None,
    },
}


@pytest.mark.parametrize("cls", list(REFERENCE), ids=lambda c: c.__name__)
def test_members_and_signatures_match_the_reference(cls):
    for member, params in REFERENCE[cls].items():
        static = inspect.getattr_static(cls, member)
        if params is None:
            continue
        fn = getattr(static, "_fn", None) or getattr(static, "__func__", None) or static
        names = [p for p in inspect.signature(fn).parameters if p not in ("self", "cls")]
        assert names == params, f"{cls.__name__}.{member}{names}"
        if hasattr(static, "_fn"):  # a method with an .aio form
            assert callable(getattr(getattr(cls, member), "aio", None)), member


def test_references_pickle_without_their_connection_state():
    d = ferry.Dict.from_name("pickled", create_if_missing=True)
    d._rows["ferry://x:1"] = {"id": "di-1"}
    copy = pickle.loads(pickle.dumps(d))
    assert copy._rows == {} and copy._name == "pickled" and copy._create_if_missing
    assert repr(ferry.Queue.from_id("qu-abc")) == "Queue.from_id('qu-abc')"


def test_checks_before_sending():
    d = ferry.Dict.from_name("never-sent")
    q = ferry.Queue.from_name("never-sent")
    with pytest.raises(InvalidError, match="100 MiB per key or value"):
        d.put("k", b"x" * (100 * 1024 * 1024 + 1))
    with pytest.raises(InvalidError, match="1 MiB per item"):
        q.put(b"x" * (1024 * 1024 + 1))
    with pytest.raises(InvalidError, match="at most 5,000 items"):
        q.put_many(list(range(5001)))
    with pytest.raises(InvalidError, match="1 to 64 bytes"):
        q.put(1, partition="é" * 33)
    with pytest.raises(InvalidError, match="partition_ttl"):
        q.put(1, partition_ttl=1.5)
    with pytest.raises(InvalidError, match="not both"):
        q.len(partition="a", total=True)
    with pytest.raises(InvalidError, match="Invalid Dict name"):
        ferry.Dict.from_name("")
    with pytest.raises(InvalidError, match="not a Queue id"):
        ferry.Queue.from_id("di-1")
    with pytest.raises(NotImplementedError, match="environments"):
        ferry.Queue.from_name("x", environment_name="dev")
    with pytest.raises(NotImplementedError, match="environments"):
        ferry.Dict.objects.list(environment_name="dev")
