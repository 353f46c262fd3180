"""Web requests feed a @batched function: an endpoint passes each request's single input on
with `.remote()`, and concurrent requests are batched together (the guide's pattern)."""

from __future__ import annotations

import json
import threading
import urllib.request

import ferry

from ._web import path_url

app = ferry.App("test-batching-web")


@app.function()
@ferry.batched(max_batch_size=8, wait_ms=1000)
def double_all(xs: list[int]) -> list[tuple[int, int]]:
    return [(x * 2, len(xs)) for x in xs]


@app.function()
@ferry.concurrent(max_inputs=16)
@ferry.fastapi_endpoint(method="GET")
def double(x: int) -> dict:
    value, batch = double_all.remote(x)
    return {"value": value, "batch": batch}


def test_concurrent_web_requests_are_batched_together(server):
    with app.run(show_logs=False):
        url = path_url(double.get_web_url())
        results: dict[int, dict] = {}

        def get(x: int) -> None:
            with urllib.request.urlopen(f"{url}?x={x}", timeout=120) as response:
                results[x] = json.loads(response.read())

        threads = [threading.Thread(target=get, args=(x,)) for x in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(150)
    assert {x: r["value"] for x, r in results.items()} == {x: 2 * x for x in range(8)}
    assert max(r["batch"] for r in results.values()) > 1  # requests shared a batch
    assert all(r["batch"] <= 8 for r in results.values())
