"""`ferry.Volume` on the client, without a server: constructors, `volumes=` validation, the
references a definition stores (app-level volumes merged in), and what works only inside a
container."""

from __future__ import annotations

import pickle

import pytest

import ferry
from ferry.exception import InvalidError

app = ferry.App("test-volume-sdk")


def _noop() -> None:
    pass


def test_from_name_checks_name_and_version() -> None:
    with pytest.raises(InvalidError, match="Invalid volume name"):
        ferry.Volume.from_name("has space")
    with pytest.raises(InvalidError, match="version must be 1 or 2"):
        ferry.Volume.from_name("v", version=3)
    with pytest.raises(NotImplementedError, match="environment_name"):
        ferry.Volume.from_name("v", environment_name="dev")
    with pytest.raises(InvalidError, match="not a volume id"):
        ferry.Volume.from_id("v")
    with pytest.raises(NotImplementedError, match="sub_path"):
        ferry.Volume.from_name("v").with_mount_options(sub_path="/users")


def test_references_carry_name_flags_and_read_only() -> None:
    vol = ferry.Volume.from_name("models", create_if_missing=True, version=2)
    config = ferry._resources.function_config(volumes={"/models/": vol, "/data": vol.read_only()})
    assert config["volumes"] == [
        {"path": "/data", "name": "models", "create_if_missing": True, "version": 2, "read_only": True},
        {"path": "/models", "name": "models", "create_if_missing": True, "version": 2, "read_only": False},
    ]
    assert vol.with_mount_options(read_only=True)._reference("/x")["read_only"] is True
    assert ferry.Volume.from_id("vo-123")._reference("/x") == {"path": "/x", "id": "vo-123", "read_only": False}


@pytest.mark.parametrize("volumes, message", [
    ({"models": ferry.Volume.from_name("v")}, "must be absolute"),
    ({"/": ferry.Volume.from_name("v")}, "cannot be mounted at '/'"),
    ({"/tmp": ferry.Volume.from_name("v")}, "cannot be mounted at '/tmp'"),
    ({"/proc/x": ferry.Volume.from_name("v")}, "hide part of the container's system"),
    ({"/opt/ferry/x": ferry.Volume.from_name("v")}, "hide part"),
    ({"/data": ferry.Volume.from_name("a"), "/data/inner": ferry.Volume.from_name("b")}, "are nested"),
    ({"/data": "my-volume"}, "takes a ferry.Volume"),
    (["/data"], "takes a dict"),
])
def test_bad_volumes_are_refused_with_the_fix(volumes, message) -> None:
    with pytest.raises(InvalidError, match=message):
        app.function(volumes=volumes)(_noop)


def test_app_level_volumes_are_merged_into_each_function_and_a_function_wins_per_path() -> None:
    shared, own = ferry.Volume.from_name("shared"), ferry.Volume.from_name("own")
    with_app_volumes = ferry.App("test-volume-app-level", volumes={"/shared": shared, "/data": shared})
    function = with_app_volumes.function(volumes={"/data": own}, serialized=True)(_noop)
    assert {(r["path"], r["name"]) for r in function._config["volumes"]} == {("/shared", "shared"), ("/data", "own")}
    with pytest.raises(InvalidError, match="are nested"):
        with_app_volumes.function(volumes={"/shared/x": own}, serialized=True)(_noop)


def test_commit_and_reload_work_only_inside_a_container_that_mounts_the_volume() -> None:
    vol = ferry.Volume.from_name("v")
    with pytest.raises(InvalidError, match="inside a container that mounts the volume.*batch_upload"):
        vol.commit()
    with pytest.raises(InvalidError, match="inside a container"):
        vol.reload()


def test_volumes_pickle_without_their_server_ids() -> None:
    vol = ferry.Volume.from_name("v", create_if_missing=True)
    vol._ids["ferry://somewhere:1"] = {"id": "vo-1"}
    copy = pickle.loads(pickle.dumps(vol))
    assert copy._ids == {} and copy.name == "v" and copy.create_if_missing


def test_run_function_accepts_volumes() -> None:
    image = ferry.Image.debian_slim().run_function(_noop, volumes={"/cache": ferry.Volume.from_name("c")})
    assert image._steps[-1].args["volumes"][0]["path"] == "/cache"
