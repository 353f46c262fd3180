"""The gateway's limits and failures (on a server with a 5 s request timeout and a 1 KiB body
limit), and how HTTP traffic drives autoscaling."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import Request

import ferry
from ferry._client import Client

from ..conftest import ServerProcess
from ._web import path_url, wait_for

app = ferry.App("test-web-limits")


@app.function()
@ferry.fastapi_endpoint(method="POST")
def upload(data: dict):
    return {"size": len(data.get("blob", ""))}


@app.function()
@ferry.fastapi_endpoint()
def sleepy(seconds: float):
    time.sleep(seconds)
    return "late"


@app.function()
@ferry.fastapi_endpoint()
async def watch_disconnect(request: Request):
    print("watching for a disconnect", flush=True)
    while not await request.is_disconnected():
        await asyncio.sleep(0.05)
    print("the client went away", flush=True)
    return "unreachable"


@app.function()
@ferry.fastapi_endpoint()
def broken():
    raise ValueError("boom")


@app.function()
@ferry.asgi_app()
def not_an_app():
    return None


@app.function(scaledown_window=2)
@ferry.fastapi_endpoint()
def busy(seconds: float):
    time.sleep(seconds)
    return {"pid": os.getpid()}


short_lived = ferry.App("test-web-limits-short")


@short_lived.function()
@ferry.fastapi_endpoint()
def hello():
    return "hello"


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory):
    own = ServerProcess.start(tmp_path_factory.mktemp("web-limits"), extra_env={
        "FERRY_WEB_REQUEST_TIMEOUT": "5", "FERRY_WEB_MAX_BODY_SIZE": "1024", "FERRY_WEB_PORT": "0"})
    try:
        with own.used(), app.run(show_logs=False):
            yield own
    finally:
        own.stop()


def test_body_over_the_limit_gets_413(limited):
    url = path_url(upload.get_web_url())
    with httpx.Client(timeout=30) as http:
        assert http.post(url, json={"blob": "x" * 500}).json() == {"size": 500}
        too_big = http.post(url, json={"blob": "x" * 2000})
        assert too_big.status_code == 413 and "FERRY_WEB_MAX_BODY_SIZE" in too_big.text

        def chunks():  # no Content-Length: the limit applies while reading
            for _ in range(4):
                yield b"x" * 512

        assert http.post(url, content=chunks()).status_code == 413


def test_request_timeout_gets_504_and_the_endpoint_keeps_serving(limited):
    url = path_url(sleepy.get_web_url())
    with httpx.Client(timeout=30) as http:
        late = http.get(url, params={"seconds": 9})  # 9 s of work against a 5 s limit
        # the gateway's own answer, not the endpoint's (which would be a 200 "late")
        assert late.status_code == 504 and "FERRY_WEB_REQUEST_TIMEOUT" in late.text
        assert http.get(url, params={"seconds": 0}).json() == "late"


def test_client_disconnect_reaches_the_app(limited):
    url = urlsplit(path_url(watch_disconnect.get_web_url()))
    client = Client.from_env_sync()

    def logged(text: str) -> bool:
        entries = client.request_sync("app.logs", app=app.app_id)["entries"]
        return any(text in e["text"] for e in entries)

    # the client goes away once the app has its request (not after a fixed time: on a busy
    # machine that can come before the container has even started)
    with socket.create_connection((url.hostname, url.port), timeout=60) as conn:
        conn.sendall(f"GET {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n".encode())
        wait_for(lambda: logged("watching for a disconnect"), 120, "the app to get the request")
    wait_for(lambda: logged("the client went away"), 120, "the app to see the disconnect")


def test_errors_become_clear_http_responses(limited):
    with httpx.Client(timeout=30) as http:
        failed = http.get(path_url(broken.get_web_url()))
        assert failed.status_code == 500  # FastAPI's own error response; the traceback goes to the logs
        unavailable = http.get(path_url(not_an_app.get_web_url()))
        assert unavailable.status_code == 503
        assert "must return an ASGI app, got NoneType" in unavailable.text


def test_traffic_starts_scales_out_and_scales_down_containers(limited):
    url = path_url(busy.get_web_url())
    client = Client.from_env_sync()

    def containers() -> int:
        info = client.request_sync("app.show", app=app.app_id)
        return len(next(f for f in info["functions"] if f["tag"] == "busy")["containers"])

    assert containers() == 0  # nothing runs before the first request
    with ThreadPoolExecutor(3) as pool:
        replies = list(pool.map(lambda _: httpx.get(url, params={"seconds": 1}, timeout=60), range(3)))
    assert [r.status_code for r in replies] == [200] * 3
    assert len({r.json()["pid"] for r in replies}) > 1  # one input per container: it scaled out
    wait_for(lambda: containers() == 0, 30, "idle containers to scale down after scaledown_window")


def test_endpoints_of_a_stopped_app_answer_404(limited):
    with short_lived.run(show_logs=False):
        url = path_url(hello.get_web_url())
        assert httpx.get(url, timeout=30).json() == "hello"
    gone = httpx.get(url, timeout=30)
    assert gone.status_code == 404 and "ferry app show" in gone.text
