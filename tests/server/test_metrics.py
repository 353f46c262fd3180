"""server/metrics.py and the gateway's `/metrics` endpoint in-process: fixed-bucket histograms,
the text format, and who may read it (anyone on loopback; beyond loopback a client credential
as a Bearer token, refused with 401 otherwise)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from ferry.server.auth import Authenticator
from ferry.server.gateway.login import DashboardLogin
from ferry.server.gateway.scrape import MetricsEndpoint, bearer_credential
from ferry.server.metrics import Exposition, Histogram, Metrics, render
from ferry.server.model import App, AppState, Pool, PoolStats
from ferry.server.store import Store


def test_histogram_buckets_are_upper_bounds_and_cumulative_when_written() -> None:
    hist = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 7.0):
        hist.observe(value)
    assert hist.counts == [2, 1, 1]  # 0.1 falls in le="0.1"
    out = Exposition()
    out.histogram("h", {"app": 'a"b'}, hist)
    assert out.text().splitlines() == [
        'h_bucket{app="a\\"b",le="0.1"} 2', 'h_bucket{app="a\\"b",le="1.0"} 3',
        'h_bucket{app="a\\"b",le="+Inf"} 4', 'h_sum{app="a\\"b"} 7.65', 'h_count{app="a\\"b"} 4']


def test_series_are_per_function_name_and_survive_pools() -> None:
    metrics = Metrics()
    first = metrics.series("app", "f")
    assert metrics.series("app", "f") is first and metrics.series("app", "g") is not first
    stats = PoolStats(series=first)
    stats.record_exec(0.002)
    first.finished("ok", 0.003)
    first.finished("error", 0.004)
    app = App(id="ap-1", name="app", state=AppState.RUNNING)
    pool = Pool(function_id="fu-1", app=app, tag="f", definition={}, stats=stats)
    text = render(metrics, pools=[pool], apps=[app], volumes=[], info={"version": "0", "runtime": "process"})
    assert 'ferry_inputs_done_total{app="app",function="f"} 1' in text
    assert 'ferry_inputs_failed_total{app="app",function="f",reason="error"} 1' in text
    assert 'ferry_input_execution_seconds_count{app="app",function="f"} 1' in text
    assert 'ferry_inputs_queued{app="app",function="f"} 0' in text
    assert 'ferry_containers{app="app",function="f",state="ready"} 0' in text
    app.state = AppState.STOPPED
    text = render(metrics, pools=[pool], apps=[app], volumes=[], info={"version": "0", "runtime": "process"})
    assert 'ferry_inputs_queued{app="app"' not in text and 'ferry_inputs_done_total{app="app",function="f"} 1' in text


def test_bearer_credential_parsing() -> None:
    def scope(value: bytes) -> dict[str, Any]:
        return {"headers": [(b"authorization", value)]}

    assert bearer_credential(scope(b"Bearer ak-1:as-2")) == ("ak-1", "as-2")
    assert bearer_credential(scope(b"bearer  ak-1:as-2 ")) == ("ak-1", "as-2")
    assert bearer_credential(scope(b"Basic xyz")) == ("", "")
    assert bearer_credential({"headers": []}) == ("", "")


def _get(endpoint: MetricsEndpoint, headers: list[tuple[bytes, bytes]], method: str = "GET") -> tuple[int, bytes, dict]:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": "/metrics", "headers": headers, "client": ("10.0.0.9", 1)}
    asyncio.run(endpoint.handle(scope, send))
    return sent[0]["status"], sent[1]["body"], dict(sent[0]["headers"])


@pytest.fixture
def authenticator(tmp_path: Path) -> Authenticator:
    return Authenticator(Store(tmp_path / "state.db"), tmp_path)


def test_loopback_metrics_are_open(authenticator: Authenticator) -> None:
    login = DashboardLogin(authenticator, required=False, secure=False)
    status, body, headers = _get(MetricsEndpoint(lambda: "x 1\n", login), [])
    assert (status, body) == (200, b"x 1\n")
    assert headers[b"content-type"].startswith(b"text/plain; version=0.0.4")
    assert _get(MetricsEndpoint(lambda: "x 1\n", login), [], method="POST")[0] == 405


def test_beyond_loopback_metrics_need_a_client_credential(authenticator: Authenticator) -> None:
    login = DashboardLogin(authenticator, required=True, secure=True)
    endpoint = MetricsEndpoint(lambda: "x 1\n", login)
    minted = authenticator.create("prometheus")
    good = f"Bearer {minted['token_id']}:{minted['token_secret']}".encode()
    assert _get(endpoint, [(b"authorization", good)])[:2] == (200, b"x 1\n")
    status, body, headers = _get(endpoint, [])
    assert status == 401 and b"Authorization: Bearer" in body and headers[b"www-authenticate"].startswith(b"Bearer")
    wrong = f"Bearer {minted['token_id']}:as-wrong".encode()
    assert _get(endpoint, [(b"authorization", wrong)])[0] == 401
    authenticator.revoke(minted["token_id"])
    assert _get(endpoint, [(b"authorization", good)])[0] == 401


def test_every_metric_is_documented_and_the_grafana_dashboard_uses_only_real_ones() -> None:
    import json
    import re

    repo = Path(__file__).resolve().parents[2]
    metrics = Metrics()
    app = App(id="ap-1", name="app", state=AppState.RUNNING)
    pool = Pool(function_id="fu-1", app=app, tag="f", definition={}, stats=PoolStats(series=metrics.series("app", "f")))
    text = render(metrics, pools=[pool], apps=[app], volumes=[{"name": "v", "ephemeral": False, "bytes": 1, "files": 1}],
                  info={"version": "0", "runtime": "process"})
    families = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    doc = (repo / "docs" / "observability.md").read_text()
    assert {"process_cpu_seconds_total", "ferry_inputs_done_total", "ferry_volume_bytes"} <= families
    undocumented = [name for name in families if f"`{name}`" not in doc and f"`{name} /" not in doc
                    and f"/ `{name}`" not in doc]
    assert undocumented == []
    dashboard = json.loads((repo / "docs" / "grafana-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    used = {re.sub(r"_(bucket|sum|count)$", "", name) for name in re.findall(r"\b((?:ferry|process)_[a-z_]+)", exprs)}
    assert used <= families, used - families
