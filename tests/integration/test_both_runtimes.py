"""The central features on every runtime: each test runs against the process runtime (the
`server` fixture), the sandbox runtime (the default one, `sandbox_server`) and the ray runtime
(`ray_server`: a control plane placing containers on a real three-node Ray cluster started on
this machine, test_cluster.py) with the same app (apps/core_apps.py): calls, classes, failures,
retries, timeouts, volumes, secrets, web endpoints, batching, concurrency and schedules. The
feature suites (test_calls.py, test_classes.py, ...) go deeper on the process runtime, whose
containers share files with the tests; test_cluster*.py go deeper on the cluster."""

from __future__ import annotations

import time
from typing import Iterator

import httpx
import pytest

import ferry
from ferry._client import Client
from ferry.exception import FunctionTimeoutError

from ..conftest import ServerProcess
from .apps import core_apps
from .apps.core_apps import app
from .test_cluster import cluster, ray_server  # noqa: F401 - module-scoped: this module's own cluster and server

HANG_GUARD = 120  # seconds: only a hang takes this long


SERVERS = {"process": "server", "sandbox": "sandbox_server", "ray": "ray_server"}


@pytest.fixture(params=list(SERVERS))
def runtime(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerProcess]:
    """The server of that runtime (the session's; the ray one is this module's), used by this
    test's client."""
    server = request.getfixturevalue(SERVERS[request.param])
    server.use(monkeypatch)
    yield server


def test_calls(runtime):
    with app.run(show_logs=False):
        assert core_apps.square.remote(7) == 49
        assert list(core_apps.square.map(range(20))) == [x * x for x in range(20)]
        assert list(core_apps.add.starmap([(1, 2), (3, 4)])) == [3, 7]
        assert core_apps.add.spawn(5, b=6).get(timeout=HANG_GUARD) == 11
        assert list(core_apps.count_to.remote_gen(4)) == [0, 1, 2, 3]


def test_class_parameters_enter_and_exit(runtime):
    with ferry.Queue.ephemeral() as exits:
        with app.run(show_logs=False):
            greeter = core_apps.Greeter(greeting="hi", exits=exits.object_id)
            first = greeter.greet.remote("ada")
            second = greeter.greet.remote("bob")
            assert first["text"] == "hi, ada" and second["text"] == "hi, bob"
            assert first["entered_in"] == first["pid"] == second["pid"]  # @enter ran in the container, once
            assert (first["calls"], second["calls"]) == (1, 2)
            assert core_apps.Greeter().greet.remote("cy")["text"] == "hello, cy"  # the default
        assert exits.get(timeout=HANG_GUARD) == {"exited": first["pid"], "calls": 2}  # @exit at app stop


def test_user_exception_reaches_the_caller(runtime):
    with app.run(show_logs=False):
        with pytest.raises(LookupError, match="raised in the container") as info:
            core_apps.fail.remote("raised in the container")
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "Remote traceback" in notes and "raise LookupError(message)" in notes, notes  # where it came from


def test_retries_until_success(runtime):
    with ferry.Dict.ephemeral() as attempts, app.run(show_logs=False):
        assert core_apps.flaky.remote(attempts.object_id) == 3
        assert attempts["n"] == 3


def test_timeout_stops_the_input(runtime):
    with ferry.Dict.ephemeral() as woke, app.run(show_logs=False):
        with pytest.raises(FunctionTimeoutError, match="longer than the function's timeout of 1s"):
            core_apps.oversleep.remote(woke.object_id)
        assert core_apps.square.remote(3) == 9  # the app serves on
        # its container was stopped: it never wakes from the sleep to record it
        assert woke.get("woke") is None


def test_volume_written_by_one_function_is_read_by_another(runtime):
    with app.run(show_logs=False):
        assert "note.txt" in core_apps.write_file.remote("note.txt", "kept in the volume")
        assert core_apps.read_file.remote("note.txt") == "kept in the volume"
    assert b"".join(core_apps.volume.read_file("note.txt")) == b"kept in the volume"


def test_secret_reaches_the_environment(runtime):
    with app.run(show_logs=False):
        assert core_apps.token.remote() == "from-a-secret"


def test_web_endpoint_through_the_gateway(runtime):
    with app.run(show_logs=False):
        url = core_apps.hello.get_web_url()
        reply = httpx.get(url, params={"name": "ferry"}, timeout=HANG_GUARD)
    assert reply.status_code == 200 and reply.json()["hello"] == "ferry"


def test_batched_inputs(runtime):
    with app.run(show_logs=False):
        outputs = list(core_apps.doubled.map(range(10)))
    assert [value for value, _ in outputs] == [2 * x for x in range(10)]
    assert all(1 <= size <= 4 for _, size in outputs), outputs


def test_concurrent_inputs_run_at_once_in_one_container(runtime):
    with app.run(show_logs=False):
        met = list(core_apps.meet.map([60.0] * 4))  # (the timeout only guards against a hang)
    assert len({m["pid"] for m in met}) == 1
    assert sorted(m["arrived"] for m in met) == [0, 1, 2, 3]  # all four were running at once


def test_max_containers_caps_the_containers_of_a_busy_map(runtime):
    """(On the ray runtime the cap is counted across the cluster's nodes.)"""
    with app.run(show_logs=False):
        served_by = list(core_apps.capped.map([0.5] * 8))
    assert len(served_by) == 8 and 1 <= len(set(served_by)) <= 2, served_by


def test_a_sandbox_runs_commands_in_the_apps_image(runtime, request):
    """ferry.Sandbox: create, exec with output and exit code, terminate (on the ray runtime, in
    a container on one of the cluster's nodes)."""
    with app.run(show_logs=False):
        sb = ferry.Sandbox.create(app=app, timeout=HANG_GUARD)
        try:
            p = sb.exec("python3", "-c", "import os, sys; print(os.environ.get('FERRY_NODE_ID', '')); sys.exit(3)")
            node = p.stdout.read().strip()
            assert p.wait() == 3
            on_a_cluster = request.node.callspec.params["runtime"] == "ray"
            assert bool(node) == on_a_cluster, node  # the cluster's nodes have ids
        finally:
            sb.terminate()
        sb.wait(raise_on_termination=False)
        assert sb.returncode is not None


def test_deployed_schedule_runs_once_per_slot(runtime):
    ticks = ferry.Queue.from_name("test-both-runtimes-ticks", create_if_missing=True)
    ticks.clear()
    before_deploy = time.time()
    core_apps.scheduled.deploy()
    try:
        runs = [ticks.get(timeout=HANG_GUARD) for _ in range(2)]
    finally:
        Client.for_url(runtime.url).request_sync("app.stop", app="test-both-runtimes-schedule")
    # the k-th run starts no sooner than the k-th slot (a period apart, from the deploy on)
    for k, started in enumerate(runs):
        assert started >= before_deploy + (k + 1) * 1.0, (k, runs, before_deploy)
