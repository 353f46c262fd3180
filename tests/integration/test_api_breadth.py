"""API names that real programs written for the hosted platform use, with a real server and real
containers: `App.image` and `App.include`, class methods marked only `@batched`/`@concurrent`,
`with_options(image=...)`, `Volume` with `client=`, `spawn_map`, `FunctionCall.gather`, the ids
of the running input and call, `is_local`, `get_current_stats`, `modal.experimental` helpers,
`get_web_url()` reachable by urllib, `ferry run` with optional parameters and `--detach`."""

from __future__ import annotations

import json
import os
import time
import urllib.request
import uuid

import pytest

import ferry
import ferry.experimental
from ferry._client import Client
from ferry.exception import InvalidError

from ..conftest import REPO, run_cli
from ._web import wait_for

app = ferry.App("test-api-breadth")
other = ferry.App("test-api-breadth-other")

IMAGE_A = ferry.Image.debian_slim().env({"BREADTH_IMAGE": "a"})
IMAGE_B = ferry.Image.debian_slim().env({"BREADTH_IMAGE": "b"})


@other.function()
def from_other(x: int) -> str:
    return f"other {x}"


app.include(other)


@app.function()
def image_env() -> str | None:
    return os.environ.get("BREADTH_IMAGE")


app.image = IMAGE_A  # functions defined from here on run IMAGE_A


@app.function()
def image_env_after() -> str | None:
    return os.environ.get("BREADTH_IMAGE")


@app.function()
def ids() -> tuple[str | None, str | None, bool]:
    return ferry.current_function_call_id(), ferry.current_input_id(), ferry.is_local()


@app.function()
async def async_ids() -> tuple[str | None, str | None]:
    return ferry.current_function_call_id(), ferry.current_input_id()


@app.function()
def record(dict_name: str, x: int) -> None:
    ferry.Dict.from_name(dict_name, create_if_missing=True)[x] = x * x


@app.function(max_containers=1)
def sleeper(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.function()
@ferry.concurrent(max_inputs=3)
def concurrency() -> int:
    return ferry.experimental.get_local_input_concurrency()


@app.function()
def stops_fetching() -> int:
    ferry.experimental.stop_fetching_inputs()
    return os.getpid()


@app.function()
def pid() -> int:
    return os.getpid()


@app.cls()
class OnlyBatched:
    @ferry.batched(max_batch_size=4, wait_ms=20)
    def double(self, xs: list[int]) -> list[int]:
        return [2 * x for x in xs]


@app.cls()
class OnlyConcurrent:
    @ferry.concurrent(max_inputs=2)
    def triple(self, x: int) -> int:
        return 3 * x


@app.function()
@ferry.fastapi_endpoint()
def hello(name: str = "world") -> dict:
    return {"hello": name}


@app.function()
@ferry.fastapi_endpoint()
def web_ids() -> dict:
    return {"call": ferry.current_function_call_id(), "input": ferry.current_input_id()}


@pytest.fixture(scope="module")
def running(server):
    with app.run(show_logs=False):
        yield app


# -- 1. App.image and App.include ------------------------------------------------------------
def test_app_image_is_a_property_that_later_definitions_use():
    plain = ferry.App("image-prop")
    assert plain.image is None
    plain.image = IMAGE_B
    assert plain.image is IMAGE_B

    @plain.function()
    def f() -> None:
        pass

    assert f._ferry_image is IMAGE_B
    with pytest.raises(InvalidError, match="ferry.Image"):
        plain.image = "debian"  # type: ignore[assignment]


def test_assigning_app_image_changes_the_image_of_functions_defined_afterwards(running):
    assert image_env.remote() is None
    assert image_env_after.remote() == "a"


def test_included_app_functions_run_with_the_including_app(running):
    assert "from_other" in app.registered_functions
    assert from_other.remote(3) == "other 3"
    with pytest.raises(InvalidError, match="itself"):
        app.include(app)


# -- 2. methods marked only @batched / @concurrent ---------------------------------------------
def test_a_method_marked_only_batched_or_concurrent_is_a_method(running):
    assert OnlyBatched().double.remote(21) == 42
    assert list(OnlyBatched().double.map([1, 2, 3])) == [2, 4, 6]
    assert OnlyConcurrent().triple.remote(5) == 15
    assert OnlyConcurrent._config.get("max_inputs") is None  # the class's config: from the method
    assert OnlyConcurrent.definition(None, "m")["config"]["max_inputs"] == 2


# -- 4. options honoured -------------------------------------------------------------------------
def test_with_options_image_runs_the_new_image(running):
    assert image_env_after.with_options(image=IMAGE_B).remote() == "b"
    assert image_env_after.remote() == "a"  # the original keeps its image
    assert OnlyConcurrent.with_options(image=IMAGE_B)().triple.remote(2) == 6


def test_volume_from_name_and_ephemeral_honour_client(server):
    client = Client.for_url(server.url)
    name = f"breadth-{uuid.uuid4().hex[:8]}"
    volume = ferry.Volume.from_name(name, create_if_missing=True, client=client)
    with volume.batch_upload() as batch:
        batch.put_file(__file__, "/me.py")
    assert [e.path for e in volume.listdir("/")] == ["me.py"]
    with ferry.Volume.ephemeral(client=client) as eph:
        assert eph.listdir("/") == []
    with pytest.raises(InvalidError, match="client="):
        ferry.Volume.from_name(name, client="not a client")
    with pytest.raises(TypeError):
        ferry.Volume.ephemeral(unknown_option=1)  # type: ignore[call-arg]
    with pytest.raises(NotImplementedError, match="environment_name"):
        ferry.Volume.ephemeral(environment_name="dev")
    ferry.Volume.delete(name)


# -- 5. calls, ids, stats --------------------------------------------------------------------------
def test_spawn_map_runs_every_input_and_returns_none(running):
    name = f"breadth-{uuid.uuid4().hex[:8]}"
    assert record.spawn_map([name] * 5, range(5)) is None
    results = ferry.Dict.from_name(name, create_if_missing=True)
    wait_for(lambda: results.len() == 5, what="the five spawned inputs")
    assert dict(results.items()) == {x: x * x for x in range(5)}
    with pytest.raises(NotImplementedError, match="experimental_spawn_map"):
        record.experimental_spawn_map([name], [1])
    ferry.Dict.objects.delete(name)


def test_function_call_gather_and_call_graph(running):
    calls = [sleeper.spawn(0.1), sleeper.spawn(0.2)]
    assert ferry.FunctionCall.gather(*calls) == [0.1, 0.2]
    assert calls[0].num_inputs() == 1 and calls[0].get(index=0) == 0.1
    with pytest.raises(NotImplementedError, match="get_call_graph"):
        calls[0].get_call_graph()


def test_current_ids_inside_inputs_and_none_outside(running):
    assert ferry.current_function_call_id() is None and ferry.current_input_id() is None
    assert ferry.is_local() is True
    call_id, input_id, local = ids.remote()
    assert call_id.startswith("fc-") and input_id.startswith("in-") and local is False
    spawned = ids.spawn()
    assert spawned.get()[0] == spawned.object_id
    mapped = list(ids.starmap([(), (), ()]))
    assert len({m[0] for m in mapped}) == 1 and len({m[1] for m in mapped}) == 3  # one call, 3 inputs
    async_call, async_input = async_ids.remote()
    assert async_call.startswith("fc-") and async_input.startswith("in-")


def test_get_current_stats_counts_backlog_and_runners(running):
    sleeper.remote(0)  # a container is up
    calls = [sleeper.spawn(1.5) for _ in range(3)]

    def busy():
        stats = sleeper.get_current_stats()
        return stats if stats.backlog >= 1 and stats.running_inputs == 1 else None

    stats = wait_for(busy, timeout=10, what="a backlog behind the one container")
    assert stats.num_total_runners == 1
    ferry.FunctionCall.gather(*calls)


def test_experimental_helpers_in_a_container(running):
    assert concurrency.remote() == 3
    first = stops_fetching.remote()
    assert wait_for(lambda: (p := stops_fetching.remote()) != first and p, timeout=30,
                    what="a new container after stop_fetching_inputs()")
    with pytest.raises(NotImplementedError, match="clustered"):
        ferry.experimental.clustered(size=2)
    with pytest.raises(RuntimeError, match="inside a Ferry container"):
        ferry.experimental.stop_fetching_inputs()


# -- 8. get_web_url is reachable by Python's resolver ---------------------------------------------
def test_get_web_url_is_reachable_with_urllib(running):
    url = hello.get_web_url()
    assert "/_/" in url and "localhost" not in url
    with urllib.request.urlopen(url + "?name=ferry", timeout=60) as response:
        assert json.loads(response.read()) == {"hello": "ferry"}


def test_web_requests_see_their_own_input_and_call_ids(running):
    seen = []
    for _ in range(2):
        with urllib.request.urlopen(web_ids.get_web_url(), timeout=60) as response:
            seen.append(json.loads(response.read()))
    assert all(s["call"].startswith("fc-") and s["input"].startswith("in-") for s in seen)
    assert seen[0]["input"] != seen[1]["input"]


# -- 3 and 7: the CLI -------------------------------------------------------------------------------
APP_FILE = str(REPO / "tests" / "integration" / "apps" / "api_breadth_cli.py")


def test_ferry_run_accepts_optional_parameters(server):
    ran = run_cli(["run", "-q", APP_FILE, "--limit", "3"], server)
    assert ran.returncode == 0, ran.stderr
    assert "entrypoint got limit=3 name=None" in ran.stdout
    ran = run_cli(["run", "-q", APP_FILE + "::describe", "--name", "x"], server)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "limit=None name='x'"


def test_ferry_run_detach_keeps_the_app_running_until_app_stop(server):
    name = f"breadth-{uuid.uuid4().hex[:8]}"
    ran = run_cli(["run", "-q", "--detach", APP_FILE, "--dict-name", name], server)
    assert ran.returncode == 0, ran.stderr
    assert "keeps running (detached)" in ran.stderr
    app_id = ran.stderr.split("keeps running")[0].split("(")[-1].split(")")[0]
    # the spawned call finishes after `ferry run` exited: the app kept running
    results = ferry.Dict.from_name(name, create_if_missing=True)
    wait_for(lambda: results.get("detached") == "done", timeout=60, what="the detached app's spawned call")
    shown = json.loads(run_cli(["app", "show", app_id, "--json"], server).stdout)
    assert shown["state"] == "running"
    assert run_cli(["app", "stop", app_id], server).returncode == 0
    shown = json.loads(run_cli(["app", "show", app_id, "--json"], server).stdout)
    assert shown["state"] == "stopped"
    ferry.Dict.objects.delete(name)


def test_ferry_run_uses_ferry_even_where_the_real_modal_is_installed(server, tmp_path):
    real = tmp_path / "modal"
    real.mkdir()
    (real / "__init__.py").write_text("raise RuntimeError('the real modal package was imported')\n")
    script = REPO / "tests" / "integration" / "apps" / "modal_alias.py"
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    ran = run_cli(["run", "-q", str(script), "--x", "6"], server, env=env)
    assert ran.returncode == 0, ran.stderr
    assert "square is 36" in ran.stdout
    assert ran.stderr.count("this program runs on Ferry") == 1


# -- names added for the compatibility table (docs/compatibility.md) -------------------------------
def test_with_concurrency_variants_run_more_inputs_at_once(running):
    assert concurrency.with_concurrency(max_inputs=5).remote() == 5
    assert concurrency.remote() == 3
    assert OnlyConcurrent.with_concurrency(max_inputs=4)().triple.remote(1) == 3
    with pytest.raises(InvalidError, match="@batched"):
        concurrency.with_batching(max_batch_size=2, wait_ms=10)
    assert OnlyBatched.with_batching(max_batch_size=2, wait_ms=5)().double.remote(4) == 8


def test_app_and_function_introspection(running):
    assert app.registered_web_endpoints == ["hello", "web_ids"]
    assert app.description == app.name
    assert app.get_dashboard_url().endswith(f"/apps/{app.app_id}")
    assert image_env.get_dashboard_url() == app.get_dashboard_url()
    assert image_env.app is app and image_env.hydrate() is image_env
    assert image_env.client.url == OnlyBatched.client.url == ferry.FunctionCall("fc-0").client.url
    assert ferry.Function.from_id(image_env.object_id).remote() is None  # calls go to that id
    with pytest.raises(InvalidError, match="function id"):
        ferry.Function.from_id("nope")
    assert OnlyBatched.object_id and OnlyBatched.object_id.startswith("fu-")
    with pytest.raises(NotImplementedError, match="App.set_tags"):
        app.set_tags({"a": "b"})


def test_volume_objects_and_info(server):
    name = f"breadth-{uuid.uuid4().hex[:8]}"
    ferry.Volume.objects.create(name)
    assert name in [v.name for v in ferry.Volume.objects.list()]
    info = ferry.Volume.from_name(name).info()
    assert info.name == name and info.created_at is not None
    ferry.Volume.objects.create(name, allow_existing=True)
    ferry.Volume.objects.delete(name)
    ferry.Volume.objects.delete(name, allow_missing=True)
    with pytest.raises(ferry.exception.NotFoundError):
        ferry.Volume.objects.delete(name)


def test_app_stop_ends_a_running_app(server):
    short = ferry.App("test-api-breadth-stop")

    @short.function(serialized=True)
    def one() -> int:
        return 1

    with short.run(show_logs=False):
        assert one.remote() == 1
        app_id = short.app_id
        short.stop()
        assert short.app_id is None
    shown = Client.from_env_sync().request_sync("app.show", app=app_id)
    assert shown["state"] == "stopped"


def test_an_included_app_deploys_with_the_including_app(server):
    name = f"breadth-deploy-{uuid.uuid4().hex[:6]}"
    helpers = ferry.App("breadth-helpers")

    @helpers.function(serialized=True)
    def helper(x: int) -> int:
        return x + 100

    main = ferry.App(name).include(helpers)
    main.deploy()
    try:
        assert ferry.Function.from_name(name, "helper").remote(1) == 101
        assert name in [row["name"] for row in ferry.experimental.list_deployed_apps()]
    finally:
        assert run_cli(["app", "stop", name], server).returncode == 0


def test_on_the_sandbox_runtime(on_sandbox):
    from .apps import api_breadth_sandbox as sandboxed

    with sandboxed.app.run(show_logs=False):
        call_id, input_id, local = sandboxed.ids.remote()
        assert call_id.startswith("fc-") and input_id.startswith("in-") and local is False
        assert sandboxed.image_env.remote() is None
        assert sandboxed.image_env.with_options(image=sandboxed.VARIANT_IMAGE).remote() == "variant"
        first = sandboxed.stops_fetching.remote()
        wait_for(lambda: sandboxed.stops_fetching.remote() != first, timeout=60,
                 what="a new sandbox container after stop_fetching_inputs()")


def test_image_build_builds_on_the_server_ahead_of_a_run(on_sandbox):
    marker = uuid.uuid4().hex[:8]
    image = ferry.Image.debian_slim().run_commands(f"echo {marker}")
    before = {record["key"] for record in Client.from_env_sync().request_sync("image.list")["images"]}
    assert image.build() is image
    after = {record["key"] for record in Client.from_env_sync().request_sync("image.list")["images"]}
    assert after - before  # a new image record: this recipe's
    with pytest.raises(NotImplementedError, match="Image.from_name"):
        ferry.Image.from_name("anything")
    with pytest.raises(NotImplementedError, match="Secret.update"):
        ferry.Secret.from_dict({"A": "1"}).update({"A": "2"})
