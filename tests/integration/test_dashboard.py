"""The dashboard, against a real server (with a declared GPU inventory) over real HTTP: the
overview lists a running app and the GPUs, an app's page lists its functions, web URLs,
containers and what they printed (HTML-escaped), no secret value ever shows, and unknown apps are 404."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

import ferry
from ferry._client import Client

from ..conftest import BEYOND_LOOPBACK, REPO, TLS_CLIENT_PRELUDE, ServerProcess, mint_credential
from ._web import wait_for

CANARY = "dash-canary-5f0e1c9a7b"
MARKER = "dashboard-marker-line"

app = ferry.App("test-dashboard", secrets=[ferry.Secret.from_dict({"DASH_TOKEN": CANARY})])


@app.function(timeout=30)
def shout(text: str) -> bool:
    print(MARKER, text)
    return os.environ.get("DASH_TOKEN") == CANARY


@app.function(cpu=0.5)
def idle() -> None:
    pass


@app.function()
@ferry.fastapi_endpoint()
def hello() -> dict[str, str]:
    return {"hello": "world"}


@pytest.fixture(scope="module")
def gpu_server(tmp_path_factory: pytest.TempPathFactory):
    proc = ServerProcess.start(tmp_path_factory.mktemp("ferry-dashboard-home"), extra_env={"FERRY_GPUS": "T4:1"})
    yield proc
    proc.stop()


@pytest.fixture
def dashboard(gpu_server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> str:
    gpu_server.use(monkeypatch)
    return Client.for_url(gpu_server.url).request_sync("server.status")["web_url"]


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.headers["content-type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["content-type"], error.read().decode()


def test_overview_and_app_page(dashboard: str):
    with app.run(show_logs=False) as running:
        assert shout.remote("<b>bold</b> & <script>alert(1)</script>") is True  # the secret reached it

        status, kind, overview = _get(dashboard + "/")
        assert status == 200 and kind.startswith("text/html")
        assert "1x T4 (1 free)" in overview
        assert "test-dashboard" in overview and running.app_id in overview
        assert ferry.__version__ in overview and "process" in overview

        def app_page() -> str | None:
            code, _, html = _get(f"{dashboard}/apps/test-dashboard")
            assert code == 200
            return html if MARKER in html else None

        page = wait_for(app_page, what="the printed line on the app page")
        assert "shout" in page and "idle" in page and "cpu=0.5" in page and "timeout=30" in page
        assert "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "<b>bold</b>" not in page and "<script>alert" not in page
        assert "ready" in page  # the container that ran `shout`
        assert hello.get_web_url() in page  # its web URL (the path-based form; the host-based twin too)
        assert _get(f"{dashboard}/apps/{running.app_id}")[0] == 200  # by id too
        for html in (overview, page):
            assert CANARY not in html


def test_unknown_app_is_404_and_endpoints_keep_their_404(dashboard: str):
    status, kind, html = _get(dashboard + "/apps/no-such-app")
    assert status == 404 and kind.startswith("text/html") and "no-such-app" in html
    status, _, text = _get(dashboard + "/not-a-dashboard-page")
    assert status == 404 and "ferry app show" in text  # the gateway's plain-text answer
    request = urllib.request.Request(dashboard + "/", method="POST", data=b"")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 405


def test_the_live_feed_answers_json_and_server_sent_events(dashboard: str):
    status, kind, text = _get(f"{dashboard}/_dashboard/state")
    assert status == 200 and kind == "application/json"
    state = json.loads(text)
    assert set(state) == {"server", "now", "apps", "functions", "containers", "calls", "images", "gpus"}
    assert state["gpus"] == [{"index": 0, "type": "T4", "name": "T4 (FERRY_GPUS override)", "memory_mb": 15360,
                              "free": True}]
    with urllib.request.urlopen(f"{dashboard}/_dashboard/events", timeout=30) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.readline() == b"event: state\n"
        first = json.loads(stream.readline().decode().removeprefix("data: "))
    assert first["server"]["gpus"] == "1x T4 (1 free)"
    assert _get(f"{dashboard}/_dashboard/nothing")[0] == 404


_FEED_READER = TLS_CLIENT_PRELUDE + r"""
import urllib.parse
web, token_id, token_secret = sys.argv[1:4]
def fetch(path, cookie=""):
    try:
        with opener.open(urllib.request.Request(web + path, headers={"Cookie": cookie} if cookie else {})) as answer:
            return {"path": path, "status": answer.status, "type": answer.headers["content-type"],
                    "first": answer.readline().decode()}
    except urllib.error.HTTPError as exc:
        return {"path": path, "status": exc.code}
for path in ("/_dashboard/state", "/_dashboard/events"):
    print(json.dumps(fetch(path)))
form = urllib.parse.urlencode({"token_id": token_id, "token_secret": token_secret}).encode()
try:
    opener.open(web + "/_login", data=form)
except urllib.error.HTTPError as exc:
    cookie = exc.headers.get("set-cookie", "").split(";")[0]
for path in ("/_dashboard/state", "/_dashboard/events"):
    print(json.dumps(fetch(path, cookie)))
"""


def test_beyond_loopback_the_live_feed_needs_a_login(netns: str, tmp_path) -> None:
    """Bound to a non-loopback address, the feed's JSON and event stream answer 401 without a
    dashboard session, and serve a logged-in one."""
    own = ServerProcess.start(tmp_path / "home", prefix=("ip", "netns", "exec", netns),
                              args=("--host", BEYOND_LOOPBACK), timeout=30)
    try:
        state = json.loads((own.home / "server.json").read_text())
        minted = mint_credential(own, netns, "viewer")
        done = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", _FEED_READER, state["web_url"],
                               minted["token_id"], minted["token_secret"]],
                              capture_output=True, text=True, timeout=60, cwd=REPO)
        assert done.returncode == 0, done.stderr
        lines = [json.loads(line) for line in done.stdout.splitlines()]
        assert lines[:2] == [{"path": "/_dashboard/state", "status": 401},
                             {"path": "/_dashboard/events", "status": 401}]
        assert lines[2]["status"] == 200 and lines[2]["type"] == "application/json"
        assert json.loads(lines[2]["first"])["server"]["url"] == state["url"]
        assert lines[3] == {"path": "/_dashboard/events", "status": 200, "type": "text/event-stream; charset=utf-8",
                            "first": "event: state\n"}
    finally:
        own.stop()
