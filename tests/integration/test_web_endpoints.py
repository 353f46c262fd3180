"""@fastapi_endpoint through the real gateway: arguments from query strings and JSON bodies,
the docs page, host- and path-based URLs, `app.show` URLs, and proxy auth tokens."""

from __future__ import annotations

import re

import fastapi
import httpx
import pytest

import ferry
from ferry._client import Client

from ..conftest import run_cli
from ._web import host_based, path_url

app = ferry.App("test-web-endpoints")


@app.function()
@ferry.fastapi_endpoint(method="GET", docs=True)
def square(x: int):
    return {"square": x**2}


@app.function()
@ferry.fastapi_endpoint(method="POST")
def generate(prompt: str, max_tokens: int = 512):
    return {"prompt": prompt, "max_tokens": max_tokens}


@app.function()
@ferry.fastapi_endpoint(method="POST", label="predict-it")
def predict(data: dict):
    return {"keys": sorted(data), "n": data.get("n")}


@app.function()
@ferry.fastapi_endpoint(method="GET")
async def get_data(user_id: str):
    return {"user_id": user_id, "data": "..."}


@app.function()
@ferry.fastapi_endpoint()
def inspect_request(request: fastapi.Request):
    return {"auth": request.headers.get("authorization"), "ferry_key": request.headers.get("ferry-key")}


@app.function()
@ferry.fastapi_endpoint(requires_proxy_auth=True)
def guarded():
    return "pong"


@app.function()
def plain(x: int) -> int:
    return x + 1


@pytest.fixture(scope="module")
def running(server):
    with app.run(show_logs=False):
        yield


def test_get_maps_query_parameters_to_arguments(running):
    base = path_url(square.get_web_url())
    with httpx.Client(timeout=30) as http:
        assert http.get(base, params={"x": 7}).json() == {"square": 49}
        missing = http.get(base)
        assert missing.status_code == 422 and "x" in missing.text  # FastAPI's validation error
        assert http.get(base, params={"x": "seven"}).status_code == 422
        assert http.post(base, params={"x": 2}).status_code == 405  # method="GET"
    assert square.remote(4) == {"square": 16}  # a web endpoint is still a function


def test_docs_page_and_openapi_schema(running):
    base = path_url(square.get_web_url())
    with httpx.Client(timeout=30) as http:
        docs = http.get(base + "docs")
        assert docs.status_code == 200 and "swagger-ui" in docs.text
        schema = http.get(base + "openapi.json").json()
        assert "/" in schema["paths"] and "get" in schema["paths"]["/"]
        # without docs=True there is no docs page
        assert http.get(path_url(generate.get_web_url()) + "docs").status_code == 404


def test_post_with_json_body(running):
    with httpx.Client(timeout=30) as http:
        reply = http.post(path_url(predict.get_web_url()), json={"n": 3, "b": 1})
        assert reply.json() == {"keys": ["b", "n"], "n": 3}
        # the guide's curl example: a JSON object for scalar parameters (query parameters win)
        url = path_url(generate.get_web_url())
        assert http.post(url, json={"prompt": "Hello world", "max_tokens": 100}).json() == {
            "prompt": "Hello world", "max_tokens": 100}
        assert http.post(url, params={"prompt": "q"}, json={"prompt": "j"}).json()["prompt"] == "q"
        assert http.post(url, params={"prompt": "p"}).json() == {"prompt": "p", "max_tokens": 512}


def test_async_function_and_request_parameter(running):
    with httpx.Client(timeout=30) as http:
        assert http.get(path_url(get_data.get_web_url()), params={"user_id": "123"}).json() == {
            "user_id": "123", "data": "..."}
        seen = http.get(path_url(inspect_request.get_web_url()), headers={"Authorization": "Bearer t"}).json()
        assert seen == {"auth": "Bearer t", "ferry_key": None}


def test_urls_are_host_based_with_a_path_based_twin(running):
    url = app._web_endpoints["square"]["url"]  # the host-based form, printed for browsers
    assert re.fullmatch(r"http://test-web-endpoints-square-dev\.localhost:\d+", url), url
    assert app._web_endpoints["predict"]["url"].startswith("http://predict-it-dev.localhost:")
    # get_web_url(): the path-based twin, which Python's own resolver reaches
    assert square.get_web_url() == path_url(url)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/_/predict-it-dev/", predict.get_web_url())
    assert plain.get_web_url() is None
    status = Client.from_env_sync().request_sync("server.status")
    assert url.endswith(f":{status['web_port']}") and status["web_url"].startswith("http://127.0.0.1:")
    base, headers = host_based(url)
    with httpx.Client(timeout=30) as http:
        assert http.get(base, params={"x": 3}, headers=headers).json() == {"square": 9}
        assert http.get(base, headers={"host": "nothing-here.localhost"}).status_code == 404
        unknown = http.get(base + "_/nothing-here/")
        assert unknown.status_code == 404 and "ferry app show" in unknown.text
        bare = path_url(url).rstrip("/")
        redirect = http.get(bare, params={"x": 4})
        assert redirect.status_code == 308 and redirect.headers["location"].endswith("/?x=4")
        assert http.get(bare, params={"x": 4}, follow_redirects=True).json() == {"square": 16}


def test_app_show_lists_endpoint_urls(running, server):
    info = Client.from_env_sync().request_sync("app.show", app=app.app_id)
    urls = {f["tag"]: (f.get("web_url"), f.get("web_path_url")) for f in info["functions"]}
    assert urls["square"] == (app._web_endpoints["square"]["url"], square.get_web_url())
    assert urls["plain"] == (None, None)
    shown = run_cli(["app", "show", app.app_id], server)
    assert shown.returncode == 0, shown.stderr
    assert app._web_endpoints["square"]["url"] in shown.stdout
    assert square.get_web_url() in shown.stdout


def test_proxy_auth_tokens(running, server):
    url = path_url(guarded.get_web_url())
    with httpx.Client(timeout=30) as http:
        refused = http.get(url)
        assert refused.status_code == 401 and "ferry token create" in refused.text
        created = run_cli(["token", "create", "--name", "ci"], server)
        assert created.returncode == 0, created.stderr
        token_id = re.search(r"wk-[0-9a-f]+", created.stdout).group(0)
        secret = re.search(r"ws-[\w-]+", created.stdout).group(0)
        assert http.get(url, headers={"Ferry-Key": token_id, "Ferry-Secret": "ws-wrong"}).status_code == 401
        ok = http.get(url, headers={"Ferry-Key": token_id, "Ferry-Secret": secret})
        assert ok.status_code == 200 and ok.json() == "pong"
        assert http.get(url, headers={"Modal-Key": token_id, "Modal-Secret": secret}).status_code == 200
        # the token headers are not passed on to the endpoint
        seen = http.get(path_url(inspect_request.get_web_url()),
                        headers={"Ferry-Key": token_id, "Ferry-Secret": secret}).json()
        assert seen["ferry_key"] is None
        listed = run_cli(["token", "list"], server)
        assert token_id in listed.stdout and "ci" in listed.stdout and secret not in listed.stdout
        assert run_cli(["token", "revoke", token_id], server).returncode == 0
        assert http.get(url, headers={"Ferry-Key": token_id, "Ferry-Secret": secret}).status_code == 401
