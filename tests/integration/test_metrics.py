"""The gateway's `/metrics` against a real server: a workload of calls, a failing call, a map,
a volume and a web endpoint, then the counters read back in Prometheus' text format; the path
never shadows an endpoint's own `/metrics`."""

from __future__ import annotations

import io
import re
import urllib.error
import urllib.request

import pytest

import ferry
from ferry._client import Client

from ..conftest import BEYOND_LOOPBACK, REPO, ServerProcess, mint_credential, run_cli
from ._web import wait_for

app = ferry.App("test-metrics")


@app.function()
def square(x: int) -> int:
    return x * x


@app.function(retries=ferry.Retries(max_retries=1, initial_delay=0.1))
def broken() -> None:
    raise ValueError("this input fails")


@app.function()
@ferry.asgi_app(label="metrics-echo")
def echo():
    async def answer(scope, receive, send):
        if scope["type"] != "http":
            return
        body = f"endpoint saw {scope['path']}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body})

    return answer


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory):
    proc = ServerProcess.start(tmp_path_factory.mktemp("ferry-metrics-home"))
    yield proc
    proc.stop()


@pytest.fixture
def web(own_server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> str:
    own_server.use(monkeypatch)
    return Client.for_url(own_server.url).request_sync("server.status")["web_url"]


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read().decode()


def parse(text: str) -> dict[str, float]:
    """`name{labels}` -> value, with labels as written (sorted as the server writes them)."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        samples[key] = float(value)
    return samples


def test_a_workload_is_counted(web: str) -> None:
    fn = 'app="test-metrics",function="{}"'
    with app.run(show_logs=False):
        assert square.remote(3) == 9
        assert square.remote(4) == 16
        with pytest.raises(ValueError):
            broken.remote()
        assert list(square.map(range(100))) == [x * x for x in range(100)]

        status, headers, text = _get(web + "/metrics")
        assert status == 200
        assert headers["content-type"].startswith("text/plain; version=0.0.4")
        samples = parse(text)
        assert samples["ferry_inputs_done_total{" + fn.format("square") + "}"] == 102
        assert samples["ferry_inputs_failed_total{" + fn.format("broken") + ',reason="error"}'] == 1
        assert samples["ferry_input_retries_total{" + fn.format("broken") + "}"] == 1
        assert samples["ferry_input_latency_seconds_count{" + fn.format("square") + "}"] == 102
        assert samples["ferry_input_execution_seconds_count{" + fn.format("square") + "}"] == 102
        assert samples["ferry_input_latency_seconds_bucket{" + fn.format("square") + ',le="+Inf"}'] == 102
        assert samples["ferry_inputs_queued{" + fn.format("square") + "}"] == 0
        assert samples["ferry_inputs_running{" + fn.format("square") + "}"] == 0
        ready = samples["ferry_containers{" + fn.format("square") + ',state="ready"}']
        assert ready >= 1
        assert samples["ferry_container_cold_start_seconds_count{" + fn.format("square") + "}"] >= ready
        assert samples['ferry_apps{state="running"}'] == 1
        assert samples["process_resident_memory_bytes"] > 10_000_000
        assert samples["process_cpu_seconds_total"] > 0
        assert re.search(r'^ferry_server_info\{version="[^"]+",runtime="process"\} 1$', text, re.M)
        # histogram buckets are cumulative
        buckets = [v for k, v in samples.items()
                   if k.startswith("ferry_input_latency_seconds_bucket{" + fn.format("square"))]
        assert buckets == sorted(buckets)

    # the counters outlive the app; a second run of it adds to them
    with app.run(show_logs=False):
        assert square.remote(5) == 25
    samples = parse(_get(web + "/metrics")[2])
    assert samples["ferry_inputs_done_total{" + fn.format("square") + "}"] == 103
    assert "ferry_inputs_queued{" + fn.format("square") + "}" not in samples  # (gauges: live apps only)


def test_volume_bytes(web: str) -> None:
    volume = ferry.Volume.from_name("metrics-volume", create_if_missing=True)
    with volume.batch_upload(force=True) as batch:
        batch.put_file(io.BytesIO(b"x" * 12_345), "/data.bin")
    samples = parse(_get(web + "/metrics")[2])
    assert samples['ferry_volume_bytes{volume="metrics-volume"}'] == 12_345
    assert samples['ferry_volume_files{volume="metrics-volume"}'] == 1


def test_metrics_never_shadows_an_endpoint(web: str) -> None:
    with app.run(show_logs=False):
        port = web.rsplit(":", 1)[1]
        status, _, text = _get(f"{web}/_/metrics-echo-dev/metrics")  # (ASGI paths keep the root path)
        assert (status, text) == (200, "endpoint saw /_/metrics-echo-dev/metrics")
        status, _, text = _get(f"{web}/metrics", headers={"Host": f"metrics-echo-dev.localhost:{port}"})
        assert (status, text) == (200, "endpoint saw /metrics")
    request = urllib.request.Request(web + "/metrics", method="POST", data=b"")
    assert _get_request(request) == 405


def _get_request(request: urllib.request.Request) -> int:
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_loopback_metrics_need_no_credential(web: str) -> None:
    wait_for(lambda: _get(web + "/metrics")[0] == 200, what="an open /metrics on loopback")


_SCRAPER = r"""
import json, ssl, sys, urllib.error, urllib.request
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
url, credential = sys.argv[1], sys.argv[2]
for headers in ({}, {"Authorization": "Bearer " + credential}):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), context=context) as answer:
            print(json.dumps({"status": answer.status, "info": b"ferry_server_info" in answer.read()}))
    except urllib.error.HTTPError as exc:
        print(json.dumps({"status": exc.code, "auth": exc.headers.get("www-authenticate")}))
"""


def test_beyond_loopback_metrics_need_a_bearer_client_credential(netns: str, tmp_path) -> None:
    """A server bound to a non-loopback address (in a network namespace of the test's own):
    `/metrics` answers 401 without a credential and 200 with `Authorization: Bearer ID:SECRET`."""
    import json
    import subprocess
    import sys

    own = ServerProcess.start(tmp_path / "home", prefix=("ip", "netns", "exec", netns),
                              args=("--host", BEYOND_LOOPBACK), timeout=30)
    try:
        state = json.loads((own.home / "server.json").read_text())
        minted = mint_credential(own, netns, "prometheus")
        done = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", _SCRAPER,
                               state["web_url"] + "/metrics", f"{minted['token_id']}:{minted['token_secret']}"],
                              capture_output=True, text=True, timeout=60, cwd=REPO)
        assert done.returncode == 0, done.stderr
        lines = [json.loads(line) for line in done.stdout.splitlines()]
        assert lines == [{"status": 401, "auth": 'Bearer realm="ferry"'}, {"status": 200, "info": True}]
    finally:
        own.stop()



def test_image_builds_are_timed(web: str, own_server: ServerProcess) -> None:
    from .apps import metrics_image

    before = parse(_get(web + "/metrics")[2])
    with metrics_image.app.run(show_logs=False):
        assert metrics_image.six_version.remote() == "1.16.0"
    after = parse(_get(web + "/metrics")[2])
    assert after["ferry_image_build_seconds_count"] == before["ferry_image_build_seconds_count"] + 1
    assert after["ferry_image_build_seconds_sum"] > before["ferry_image_build_seconds_sum"]
    with metrics_image.app.run(show_logs=False):  # found in the cache: no build
        assert metrics_image.six_version.remote() == "1.16.0"
    assert parse(_get(web + "/metrics")[2])["ferry_image_build_seconds_count"] == after["ferry_image_build_seconds_count"]
    failed = run_cli(["image", "build", "tests/integration/apps/metrics_image.py::broken_image"], own_server)
    assert failed.returncode == 1
    assert parse(_get(web + "/metrics")[2])["ferry_image_build_failures_total"] == before["ferry_image_build_failures_total"] + 1
