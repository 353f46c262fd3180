"""Spare sandboxes (server/runtimes/sandbox/spares.py) with a real sandbox server: a container
of a kind seen before becomes a spare started ahead, with its own ids, secrets and /tmp; a
spare's own environment holds nothing of a container; containers with volumes start the
ordinary way."""

from __future__ import annotations

from pathlib import Path

from ferry.server.runtimes.base import ContainerSpec
from ferry.server.runtimes.sandbox.runtime import SandboxRuntime

from ..conftest import ServerProcess
from .apps.spare_apps import app, report, report_with_volume

SPARE = "ferry._container.spare"
ATTEMPTS = 20


def _from_a_spare(seen: dict) -> bool:
    return SPARE in seen["cmdline"]


def test_a_container_of_a_kind_seen_before_becomes_a_spare(on_sandbox: ServerProcess):
    with app.run(show_logs=False):
        first = report.remote()
        assert not _from_a_spare(first)  # no spare of this kind existed yet
        # a spare starts in the background after a start: new containers (one per variant
        # pool) find it once it is up
        seen = [report.with_options(timeout=200 + n).remote() for n in range(ATTEMPTS)]
    spared = [s for s in seen if _from_a_spare(s)]
    assert spared, f"no container of {ATTEMPTS} started from a spare"
    for one in spared:
        assert one["secret"] == "s3cret"                   # its secrets came with its claim
        assert one["container"].startswith("ct-")           # and its own id
        assert not one["marker_seen_before"]                # its own /tmp: nothing of the others
    assert len({s["container"] for s in seen}) == len(seen)


def test_containers_with_volumes_start_the_ordinary_way(on_sandbox: ServerProcess):
    with app.run(show_logs=False):
        seen = [report_with_volume.with_options(timeout=300 + n).remote() for n in range(3)]
    assert not any(_from_a_spare(s) for s in seen)


def test_a_spare_s_environment_holds_nothing_of_a_container(tmp_path: Path):
    from ferry.server.images.model import BuiltImage

    runtime = SandboxRuntime(tmp_path / "scratch")
    layer = tmp_path / "layer"
    layer.mkdir()
    spec = ContainerSpec(container_id="ct-one", function_id="fn-one", server_url="ferry://x",
                         env={"SECRET_VALUE": "s3cret", "FERRY_CONTAINER_SECRET": "cs-abc"},
                         image=BuiltImage(key="k", python="python3", layers=(layer,)),
                         control_socket=tmp_path / "control.sock")
    (tmp_path / "control.sock").touch()
    spare = runtime.sandbox_spec(spec, tmp_path / "spare", spare_fd=7).env
    container = runtime.sandbox_spec(spec, tmp_path / "container").env
    assert container["SECRET_VALUE"] == "s3cret" and container["FERRY_CONTAINER_ID"] == "ct-one"
    for name in ("SECRET_VALUE", "FERRY_CONTAINER_SECRET", "FERRY_CONTAINER_ID", "FERRY_FUNCTION_ID"):
        assert name not in spare
    assert spare["FERRY_SPARE_FD"] == "7"
    other = ContainerSpec(**{**spec.__dict__, "container_id": "ct-two", "env": {"SECRET_VALUE": "other"}})
    assert runtime.spares is not None and runtime.spares.kind_of(spec) == runtime.spares.kind_of(other)
