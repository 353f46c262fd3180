"""The web decorators' options and errors (no server needed), the gateway's labels, and the
container's WSGI environ."""

from __future__ import annotations

import warnings

import pytest

import ferry
from ferry._container.web_apps import wsgi_environ
from ferry.exception import InvalidError
from ferry.server.gateway import endpoint_label


def definition(fn: ferry.Function) -> dict:
    return fn.definition(None, "module")


def test_fastapi_endpoint_records_its_options():
    app = ferry.App("web-unit")

    @app.function()
    @ferry.fastapi_endpoint(method="post", label="my-api", docs=True, requires_proxy_auth=True)
    def api(x: int):
        return x

    assert definition(api)["web"] == {"type": "fastapi", "method": "POST", "docs": True, "label": "my-api",
                                      "requires_proxy_auth": True}
    assert api.local(3) == 3


def test_web_endpoint_is_a_deprecated_alias_pointing_at_the_caller():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decorator = ferry.web_endpoint(method="GET")
    assert caught[0].category is DeprecationWarning and "fastapi_endpoint" in str(caught[0].message)
    assert caught[0].filename == __file__
    app = ferry.App("web-unit")

    @app.function()
    @decorator
    def old():
        return 1

    assert definition(old)["web"]["type"] == "fastapi"


def test_asgi_wsgi_and_web_server_records():
    app = ferry.App("web-unit")

    @app.function()
    @ferry.asgi_app(label="front")
    def asgi():
        return None

    @app.function()
    @ferry.wsgi_app()
    def wsgi():
        return None

    @app.function()
    @ferry.web_server(8000, startup_timeout=12)
    def server():
        pass

    assert definition(asgi)["web"] == {"type": "asgi", "label": "front", "requires_proxy_auth": False}
    assert definition(wsgi)["web"]["type"] == "wsgi"
    assert definition(server)["web"] == {"type": "server", "port": 8000, "startup_timeout": 12.0, "label": None,
                                         "requires_proxy_auth": False}
    assert definition(server)["config"]["max_containers"] == 1  # one port: one container


@pytest.mark.parametrize("make, match", [
    (lambda: ferry.fastapi_endpoint(method="FETCH"), "method must be one of"),
    (lambda: ferry.fastapi_endpoint(label="Not_Valid"), "Invalid web endpoint label"),
    (lambda: ferry.asgi_app(label="-dash"), "Invalid web endpoint label"),
    (lambda: ferry.web_server(0), "between 1 and 65535"),
    (lambda: ferry.web_server(8000, startup_timeout=0), "startup_timeout"),
    (lambda: ferry.wsgi_app(requires_proxy_auth="yes"), "requires_proxy_auth"),
])
def test_bad_options_fail_clearly(make, match):
    with pytest.raises(InvalidError, match=match):
        make()


def test_bare_use_and_misuse_fail_clearly():
    with pytest.raises(InvalidError, match="parentheses"):
        @ferry.fastapi_endpoint
        def f():
            pass

    with pytest.raises(InvalidError, match="take no arguments"):
        @ferry.asgi_app()
        def g(x):
            pass

    with pytest.raises(NotImplementedError, match="custom_domains"):
        ferry.fastapi_endpoint(custom_domains=["api.example.com"])

    with pytest.raises(InvalidError, match="only one"):
        @ferry.asgi_app()
        @ferry.wsgi_app()
        def h():
            pass


def test_web_endpoints_reject_batching_classes_and_extra_containers():
    app = ferry.App("web-unit")
    with pytest.raises(InvalidError, match="cannot be @batched"):
        @app.function()
        @ferry.batched(max_batch_size=4)
        @ferry.fastapi_endpoint()
        def batched(xs):
            return xs

    with pytest.raises(InvalidError, match="cannot be @batched"):
        @app.cls()
        class Batched:
            @ferry.batched(max_batch_size=4)
            @ferry.fastapi_endpoint()
            def predict(self, xs):
                return xs

    @app.cls()
    class Model:  # a class's web endpoints are served by its containers (test_web_classes.py)
        @ferry.fastapi_endpoint()
        def predict(self):
            return 1

    assert app.registered_web_endpoints == ["Model.predict"]

    with pytest.raises(InvalidError, match="runs one container"):
        @app.function(max_containers=3)
        @ferry.web_server(8000)
        def server():
            pass


def test_concurrent_combines_with_web_decorators():
    app = ferry.App("web-unit")

    @app.function()
    @ferry.concurrent(max_inputs=20)
    @ferry.asgi_app()
    def api():
        return None

    assert definition(api)["config"]["max_inputs"] == 20


def test_get_web_url_before_the_app_runs_says_what_to_do():
    app = ferry.App("web-unit")

    @app.function()
    @ferry.fastapi_endpoint()
    def api():
        return 1

    @app.function()
    def plain():
        return 1

    with pytest.raises(ferry.exception.ExecutionError, match="ferry serve"):
        api.get_web_url()
    assert plain.get_web_url() is None


def test_endpoint_labels():
    web = {"label": None}
    assert endpoint_label("My App", "predict_v2", web, ephemeral=False) == "my-app-predict-v2"
    assert endpoint_label("my-app", "predict", web, ephemeral=True) == "my-app-predict-dev"
    assert endpoint_label("a", "b", {"label": "api"}, ephemeral=True) == "api-dev"
    long = endpoint_label("x" * 50, "y" * 50, web, ephemeral=True)
    assert len(long) <= 63 and long.endswith("-dev")
    assert long != endpoint_label("x" * 50, "y" * 51, web, ephemeral=True)


def test_wsgi_environ_follows_pep_3333():
    scope = {"type": "http", "method": "POST", "path": "/_/api/items/é", "root_path": "/_/api",
             "query_string": b"a=1", "headers": [(b"content-type", b"application/json"), (b"x-a", b"1"),
                                                 (b"x-a", b"2"), (b"content-length", b"2")],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 7789), "http_version": "1.1"}
    environ = wsgi_environ(scope, b"{}")
    assert environ["SCRIPT_NAME"] == "/_/api"
    assert environ["PATH_INFO"] == "/items/é".encode().decode("latin-1")
    assert environ["QUERY_STRING"] == "a=1" and environ["CONTENT_TYPE"] == "application/json"
    assert environ["CONTENT_LENGTH"] == "2" and environ["HTTP_X_A"] == "1,2"
    assert environ["wsgi.input"].read() == b"{}" and environ["REMOTE_ADDR"] == "127.0.0.1"
