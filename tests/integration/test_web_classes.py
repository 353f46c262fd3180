"""Web endpoints on `@app.cls()` methods, through the real gateway: `@enter` runs before the
first request, one container serves a class's endpoints and its `@method`s, each endpoint has
its own label and URL, `Cls.from_name` finds them, and classes that cannot serve them are
refused when they are defined."""

from __future__ import annotations

import httpx
import pytest

import ferry
from ferry.exception import InvalidError

from ..conftest import ServerProcess, run_cli
from .apps.web_classes import Model, app, deployed


@pytest.fixture(scope="module")
def running(server):
    with app.run(show_logs=False):
        yield app


def test_enter_runs_before_the_first_request_and_query_parameters_are_arguments(running):
    reply = httpx.get(Model().predict.get_web_url(), params={"x": 21}, timeout=60).json()
    assert reply["greeting"] == "hello" and reply["double"] == 42
    assert reply["loaded_by"] > 0  # set by @enter, before the request ran


def test_one_container_serves_every_endpoint_and_method_of_the_class(running):
    pid = Model().pid.remote()
    first = httpx.get(Model().predict.get_web_url(), timeout=60).json()
    second = httpx.get(Model().predict.get_web_url(), timeout=60).json()
    assert first["loaded_by"] == second["loaded_by"] == pid
    assert second["requests"] == first["requests"] + 1  # the same instance, state kept
    status = httpx.get(Model().api.get_web_url() + "status", timeout=60).json()
    assert status == {"status": "ready", "loaded_by": pid}
    posted = httpx.post(Model().echo.get_web_url(), json={"a": 1}, timeout=60).json()
    assert posted == {"echo": {"a": 1}, "loaded_by": pid}
    legacy = httpx.get(Model().legacy.get_web_url() + "page", timeout=60)
    assert legacy.text == f"wsgi /page {pid}"


def test_each_endpoint_has_its_own_label(running):
    urls = {name: getattr(Model(), name).get_web_url() for name in ("predict", "echo", "api", "legacy")}
    assert urls["predict"].endswith("/_/test-web-classes-model-predict-dev/")
    assert urls["echo"].endswith("/_/test-web-classes-echo-dev/")  # its label=
    assert urls["api"].endswith("/_/test-web-classes-model-api-dev/")
    assert len(set(urls.values())) == 4


def test_the_app_lists_the_endpoints_of_its_classes():
    assert {"Model.predict", "Model.echo", "Model.api", "Model.legacy"} <= set(app.registered_web_endpoints)


def test_a_web_method_is_also_callable_remotely(running):
    assert Model().predict.remote(x=5)["double"] == 10


def test_app_show_lists_the_endpoints_of_the_class(running, server):
    shown = run_cli(["app", "show", running.app_id], server)
    assert shown.returncode == 0, shown.stderr
    assert "web endpoint predict:" in shown.stdout
    assert "test-web-classes-model-api-dev" in shown.stdout


def test_the_endpoint_of_an_instance_with_parameters_is_refused(running):
    with pytest.raises(InvalidError, match="default parameters"):
        Model(greeting="bonjour").predict.get_web_url()


def test_a_deployed_class_s_endpoints_are_found_by_name(server):
    deployed.deploy()
    try:
        url = ferry.Cls.from_name("test-web-classes-deployed", "Greeter")().hello.get_web_url()
        assert url.endswith("/_/test-web-classes-deployed-greeter-hello/")
        assert httpx.get(url, params={"name": "ferry"}, timeout=60).json() == "hello ferry"
    finally:
        stopped = run_cli(["app", "stop", "test-web-classes-deployed"], server)
        assert stopped.returncode == 0, stopped.stderr


def test_a_class_with_a_required_parameter_cannot_serve_endpoints():
    refused = ferry.App("test-web-classes-refused")
    with pytest.raises(InvalidError, match="give size a default"):
        @refused.cls()
        class Sized:
            size: int = ferry.parameter()

            @ferry.fastapi_endpoint()
            def get(self) -> int:
                return self.size


def test_a_web_server_class_runs_in_one_container():
    refused = ferry.App("test-web-classes-server")
    with pytest.raises(InvalidError, match="runs one container"):
        @refused.cls(max_containers=2)
        class Served:
            @ferry.web_server(8000)
            def serve(self) -> None:
                pass


def test_two_endpoints_with_one_label_are_refused(server):
    clash = ferry.App("test-web-classes-clash")

    @clash.cls()
    class Twice:
        @ferry.fastapi_endpoint(label="same-label")
        def one(self) -> int:
            return 1

        @ferry.fastapi_endpoint(label="same-label")
        def two(self) -> int:
            return 2

    with pytest.raises(InvalidError, match="Twice.one and Twice.two"):
        with clash.run(show_logs=False):
            pass


def test_on_the_sandbox_runtime(on_sandbox: ServerProcess):
    with app.run(show_logs=False):
        reply = httpx.get(Model().predict.get_web_url(), params={"x": 2}, timeout=120).json()
        assert reply["double"] == 4 and reply["loaded_by"] == Model().pid.remote()
