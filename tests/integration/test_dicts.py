"""ferry.Dict against a real server and real containers: every method (blocking and `.aio`),
from inside containers, what containers may not do, limits, durability across a SIGKILL of
the server, and `ferry dict`."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import signal
import subprocess
import uuid
import warnings

import pytest

import ferry
from ferry.exception import InvalidError, NotFoundError

from ..conftest import ServerProcess, run_cli
from .apps.dict_queue_apps import app, use_dict, use_dict_by_id


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_every_method(server):
    name = _unique("test-dict")
    d = ferry.Dict.from_name(name, create_if_missing=True)
    d["a"] = 1
    d[("t", 2)] = [1, 2]
    assert d["a"] == 1 and d[("t", 2)] == [1, 2]
    assert "a" in d and "zz" not in d and d.contains("a")
    assert d.get("zz") is None and d.get("zz", 5) == 5
    with pytest.raises(KeyError):
        d["zz"]
    assert d.put("a", 2, skip_if_exists=True) is False and d["a"] == 1
    assert d.put("b", 2) is True and d.put("b", 3) is True and d["b"] == 3
    d.update({"c": 3}, e=5)
    d.update([("f", 6)])
    assert d.len() == 6
    assert sorted(d.keys(), key=repr) == sorted(["a", ("t", 2), "b", "c", "e", "f"], key=repr)
    assert sorted(d.values(), key=repr) == sorted([1, [1, 2], 3, 3, 5, 6], key=repr)
    assert dict(d.items())["e"] == 5
    assert d.pop("c") == 3 and d.pop("c", "gone") == "gone"
    with pytest.raises(KeyError):
        d.pop("c")
    del d["f"]
    with pytest.raises(KeyError):
        del d["f"]
    info = d.info()
    assert info.name == name and isinstance(info.created_at, datetime.datetime)
    assert d.object_id.startswith("di-") and d.name == name
    same = ferry.Dict.from_id(d.object_id)
    assert same["a"] == 1
    d.clear()
    assert d.len() == 0 and list(d.items()) == []
    assert name in [x.name for x in ferry.Dict.objects.list()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ferry.Dict.delete(name)
    assert any("Dict.objects.delete" in str(w.message) for w in caught)
    with pytest.raises(NotFoundError, match="not found"):
        ferry.Dict.from_name(name).len()
    ferry.Dict.objects.delete(name, allow_missing=True)


def test_aio_forms_and_ephemeral_async(server):
    async def main() -> None:
        async with ferry.Dict.ephemeral() as d:
            await d.put.aio("k", "v")
            assert await d.get.aio("k") == "v"
            assert await d.contains.aio("k")
            await d.update.aio({"x": 1})
            assert await d.len.aio() == 2
            assert sorted([k async for k in d.keys.aio()]) == ["k", "x"]
            assert sorted([v async for v in d.values.aio()], key=repr) == ["v", 1]
            assert sorted([i async for i in d.items.aio()], key=repr) == [("k", "v"), ("x", 1)]
            assert await d.pop.aio("x") == 1
            assert (await d.info.aio()).name is None
            await d.clear.aio()
            assert await d.len.aio() == 0
            object_id = d.object_id
        with pytest.raises(NotFoundError):
            await ferry.Dict.from_id(object_id).len.aio()
        name = _unique("test-dict-aio")
        await ferry.Dict.objects.create.aio(name)
        assert name in [x.name for x in await ferry.Dict.objects.list.aio()]
        await ferry.Dict.objects.delete.aio(name)

    asyncio.run(main())


def test_ephemeral_dicts_are_deleted_with_their_block_and_hidden_from_lists(server):
    with ferry.Dict.ephemeral() as d:
        d["k"] = 1
        object_id = d.object_id
        assert d.name is None
        assert object_id not in [x.object_id for x in ferry.Dict.objects.list()]
    with pytest.raises(NotFoundError, match="no longer exists"):
        ferry.Dict.from_id(object_id).get("k")


def test_containers_read_and_write_but_may_not_list_or_delete(server):
    name = _unique("test-dict-container")
    d = ferry.Dict.from_name(name, create_if_missing=True)
    d["from-outside"] = 41
    with app.run(show_logs=False):
        result = use_dict.remote(name)
        with ferry.Dict.ephemeral() as eph:
            eph["from-outside"] = 1
            assert use_dict_by_id.remote(eph.object_id) == ["from-outside", "written-in-container"]
            assert eph["written-in-container"] == 7
    assert result["seen"] == 41 and result["len"] == 3 and result["still_there"]
    assert d["from-container"] == {"seen": 41} and d[("tuple", 1)] == 1.5
    for what in ("list", "delete"):
        assert "not permitted from inside a container" in result["refused"][what], result["refused"]
    assert name in [x.name for x in ferry.Dict.objects.list()]  # the container could not delete it
    ferry.Dict.objects.delete(name)


def test_limits_and_bad_arguments_fail_clearly(server):
    with ferry.Dict.ephemeral() as d:
        with pytest.raises(InvalidError, match="100 MiB per key or value"):
            d["big"] = b"x" * (100 * 1024 * 1024 + 1)
        with pytest.raises(InvalidError, match="limit of 10,000"):
            d.update({i: i for i in range(10_001)})
        d.update({i: i for i in range(10_000)})
        assert d.len() == 10_000
        assert len(list(d.keys())) == 10_000  # several pages
    with pytest.raises(InvalidError, match="Invalid Dict name"):
        ferry.Dict.from_name("no spaces please")
    with pytest.raises(InvalidError, match="not a Dict id"):
        ferry.Dict.from_id("qu-123")
    with pytest.raises(NotImplementedError, match="environment_name"):
        ferry.Dict.from_name("x", environment_name="prod")
    with pytest.raises(NotImplementedError, match="dashboard"):
        ferry.Dict.from_name("x").get_dashboard_url()
    with pytest.raises(NotFoundError, match="ferry dict create"):
        ferry.Dict.from_name(_unique("missing")).get("k")


def test_contents_survive_a_sigkill_of_the_server(tmp_path, monkeypatch):
    home = tmp_path / "home"
    proc = ServerProcess.start(home)
    try:
        monkeypatch.setenv("FERRY_HOME", str(home))
        proc.use(monkeypatch)
        d = ferry.Dict.from_name("durable", create_if_missing=True)
        d.update({f"k{i}": i for i in range(100)})
        d["last"] = "acknowledged"
        os.killpg(proc.process.pid, signal.SIGKILL)
        proc.process.wait()
        proc = ServerProcess.start(home)
        proc.use(monkeypatch)
        d = ferry.Dict.from_name("durable")
        assert d.len() == 101 and d["last"] == "acknowledged" and d["k42"] == 42
    finally:
        proc.stop(signal.SIGKILL)


def test_dict_cli(server):
    name = _unique("test-dict-cli")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return run_cli(["dict", *args], server, env={"COLUMNS": "300"})

    assert cli("create", name).returncode == 0
    assert "already exists" in cli("create", name).stderr
    d = ferry.Dict.from_name(name)
    d["greeting"] = "hello"
    d[2] = [1, 2]
    listed = cli("list")
    assert name in listed.stdout
    row = next(r for r in json.loads(cli("list", "--json").stdout) if r["name"] == name)
    assert row["entries"] == 2 and row["id"].startswith("di-")
    assert cli("get", name, "greeting").stdout.strip() == "'hello'"
    missing = cli("get", name, "nope")
    assert missing.returncode == 1 and "no key 'nope'" in missing.stdout
    items = cli("items", name)
    assert "'greeting'" in items.stdout and "[1, 2]" in items.stdout
    assert len(json.loads(cli("items", name, "1", "--json").stdout)) == 1
    assert cli("clear", name, "--yes").returncode == 0 and d.len() == 0
    assert cli("delete", name, "--yes").returncode == 0
    assert "not found" in cli("get", name, "greeting").stderr
    assert cli("delete", name, "--yes", "--allow-missing").returncode == 0
