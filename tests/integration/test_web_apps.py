"""@asgi_app (with lifespan, streaming, server-sent events, WebSockets), @wsgi_app (Flask),
@web_server (a server the container starts) and @concurrent, through the real gateway."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import StreamingResponse
from flask import Flask, request
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import ferry
from ferry._client import Client

from ._web import path_url, wait_for

app = ferry.App("test-web-apps")

# -- an ASGI app with a lifespan, streaming, SSE and a WebSocket --------------------------------
STARTUPS = []
release = asyncio.Event()  # set by /release: lets /stream finish (proves chunks are not buffered)


@asynccontextmanager
async def lifespan(api: FastAPI):
    STARTUPS.append(os.getpid())
    yield {"greeting": "hello from lifespan"}
    print(f"lifespan shutdown in {os.getpid()}", flush=True)


web_app = FastAPI(lifespan=lifespan)


@web_app.get("/")
def root():
    return {"message": "Hello from Ferry!"}


@web_app.post("/predict")
def predict(data: dict):
    return {"prediction": sum(data["values"])}


@web_app.get("/stream")
async def stream():
    async def chunks():
        yield b"first\n"
        await asyncio.wait_for(release.wait(), 60)
        yield b"second\n"

    return StreamingResponse(chunks(), media_type="text/plain")


@web_app.get("/release")
async def release_stream():
    release.set()
    return {"released": True}


@web_app.get("/lifespan")
async def lifespan_state(request: Request):
    return {"startups": len(STARTUPS), "greeting": request.state.greeting}


@web_app.get("/events")
async def events():
    async def stream_events():
        for n in range(3):
            yield f"event: tick\ndata: {n}\n\n"
            await asyncio.sleep(0.01)

    return StreamingResponse(stream_events(), media_type="text/event-stream")


@web_app.websocket("/ws")
async def echo(websocket: WebSocket):
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "bye":
            await websocket.close(code=1000)
            return
        if message.get("text") is not None:
            await websocket.send_text(f"echo: {message['text']}")
        else:
            await websocket.send_bytes(message["bytes"][::-1])


@app.function(max_containers=1)
@ferry.concurrent(max_inputs=10)
@ferry.asgi_app()
def fastapi_app():
    return web_app


# -- a Flask app ---------------------------------------------------------------------------------
flask_app = Flask(__name__)


@flask_app.route("/")
def home():
    return "Hello from Flask on Ferry!"


@flask_app.route("/echo", methods=["POST"])
def flask_echo():
    return {"json": request.get_json(), "script_name": request.script_root, "path": request.path}


@flask_app.route("/chunks")
def flask_chunks():
    return flask_app.response_class((f"line {n}\n" for n in range(3)), mimetype="text/plain")


@app.function()
@ferry.wsgi_app()
def flask_endpoint():
    return flask_app


# -- a server the container starts itself --------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# a free port per test session (the container gets the same value through its environment), so
# that test sessions running side by side on one machine do not compete for one port
WEB_SERVER_PORT = int(os.environ.setdefault("WEB_APPS_TEST_SERVER_PORT", str(_free_port())))


@app.function(secrets=[ferry.Secret.from_dict({"WEB_APPS_TEST_SERVER_PORT": str(WEB_SERVER_PORT)})])
@ferry.web_server(port=WEB_SERVER_PORT, startup_timeout=20)
def custom_server():
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"custom server saw {self.path} (prefix {self.headers.get('X-Forwarded-Prefix')})".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            data = self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(201)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data.upper())

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", WEB_SERVER_PORT), Handler)
    httpd.serve_forever()


# -- @concurrent: parallel requests in one container --------------------------------------------
barrier = threading.Barrier(4, timeout=30)


@app.function(max_containers=1)
@ferry.concurrent(max_inputs=4)
@ferry.fastapi_endpoint()
def together():
    barrier.wait()  # returns only when 4 requests run at the same time
    return {"pid": os.getpid()}


@pytest.fixture(scope="module")
def running(server):
    with app.run(show_logs=False):
        yield


def test_asgi_app_with_lifespan_and_json(running):
    base = path_url(fastapi_app.get_web_url())
    with httpx.Client(timeout=30) as http:
        assert http.get(base).json() == {"message": "Hello from Ferry!"}
        assert http.post(base + "predict", json={"values": [1, 2, 3]}).json() == {"prediction": 6}
        assert http.get(base + "missing").status_code == 404
        for _ in range(3):  # lifespan startup ran once for the container, not per request
            assert http.get(base + "lifespan").json() == {"startups": 1, "greeting": "hello from lifespan"}


def test_streaming_response_is_not_buffered(running):
    base = path_url(fastapi_app.get_web_url())
    with httpx.Client(timeout=30) as http, http.stream("GET", base + "stream") as response:
        lines = response.iter_lines()
        assert next(lines) == "first"  # arrives while the endpoint is still waiting
        assert http.get(base + "release").json() == {"released": True}
        assert next(lines) == "second"


def test_server_sent_events(running):
    base = path_url(fastapi_app.get_web_url())
    with httpx.Client(timeout=30) as http, http.stream("GET", base + "events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        data = [line for line in response.iter_lines() if line.startswith("data:")]
    assert data == ["data: 0", "data: 1", "data: 2"]


def test_websocket_echo(running):
    url = path_url(fastapi_app.get_web_url()).replace("http://", "ws://") + "ws"
    with connect(url, open_timeout=30) as websocket:
        websocket.send("hi")
        assert websocket.recv(timeout=30) == "echo: hi"
        websocket.send(b"\x01\x02\x03")
        assert websocket.recv(timeout=30) == b"\x03\x02\x01"
        websocket.send("bye")
        with pytest.raises(ConnectionClosed):
            websocket.recv(timeout=30)
        assert websocket.close_code == 1000


def test_wsgi_flask_app(running):
    base = path_url(flask_endpoint.get_web_url())
    with httpx.Client(timeout=30) as http:
        home = http.get(base)
        assert home.status_code == 200 and home.text == "Hello from Flask on Ferry!"
        echoed = http.post(base + "echo", json={"a": [1, 2]}).json()
        assert echoed["json"] == {"a": [1, 2]}
        assert echoed["path"] == "/echo" and echoed["script_name"].startswith("/_/")
        assert http.get(base + "chunks").text == "line 0\nline 1\nline 2\n"
        assert http.get(base + "nope").status_code == 404


def test_web_server_container(running):
    base = path_url(custom_server.get_web_url())
    with httpx.Client(timeout=60) as http:
        reply = http.get(base + "some/path?q=1")
        assert reply.status_code == 200
        assert reply.text.startswith("custom server saw /some/path?q=1 (prefix /_/")
        created = http.post(base + "upper", content=b"ferry")
        assert created.status_code == 201 and created.content == b"FERRY"


def test_concurrent_requests_share_one_container(running):
    url = path_url(together.get_web_url())
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: httpx.get(url, timeout=60), range(4)))
    assert [r.status_code for r in replies] == [200] * 4
    assert len({r.json()["pid"] for r in replies}) == 1


def test_lifespan_shutdown_runs_when_the_container_stops(server):
    with app.run(show_logs=False):
        base = path_url(fastapi_app.get_web_url())
        assert httpx.get(base, timeout=30).status_code == 200
        app_id = app.app_id
    client = Client.from_env_sync()

    def shutdown_logged() -> bool:
        entries = client.request_sync("app.logs", app=app_id)["entries"]
        return any("lifespan shutdown" in e["text"] for e in entries)

    wait_for(shutdown_logged, 30, "the lifespan shutdown message in the app's logs")


def test_open_websockets_are_closed_with_1012_when_the_container_stops(server):
    run = app.run(show_logs=False)
    run.__enter__()
    stopped = False
    try:
        url = path_url(fastapi_app.get_web_url()).replace("http://", "ws://") + "ws"
        with connect(url, open_timeout=30) as websocket:
            websocket.send("still here")
            assert websocket.recv(timeout=30) == "echo: still here"
            run.__exit__(None, None, None)  # stop the app while the session is open
            stopped = True
            with pytest.raises(ConnectionClosed):
                websocket.recv(timeout=30)
            assert websocket.close_code == 1012  # "service restart": clients reconnect
    finally:
        if not stopped:
            run.__exit__(None, None, None)
