"""Samples of the reference guide, verbatim with `import modal`, through the `ferry` CLI on
the default (sandbox) runtime: the compatibility contract, checked end to end."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

from ..conftest import run_cli

GUIDE = Path(__file__).parent / "guide"


def test_quick_start_runs(sandbox_server):
    result = run_cli(["run", str(GUIDE / "quick_start.py")], sandbox_server, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Hello World!" in result.stdout


def test_map_reduce_pattern_runs(sandbox_server):
    result = run_cli(["run", str(GUIDE / "map_reduce.py")], sandbox_server, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"Result: {sum(x * x for x in range(1000000))}" in result.stdout


def test_secret_from_dict_sample_runs(sandbox_server):
    result = run_cli(["run", str(GUIDE / "secrets_from_dict.py")], sandbox_server, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Secrets loaded" in result.stdout


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def test_simple_function_endpoints_deploy_and_answer(sandbox_server):
    """No image= in the sample: the default image of a FastAPI endpoint carries FastAPI."""
    result = run_cli(["deploy", str(GUIDE / "endpoints.py")], sandbox_server, timeout=600)
    assert result.returncode == 0, result.stderr
    urls = dict(re.findall(r"(\w+) => \S+\s+\(or (http://\S+?)\)", result.stdout))
    assert set(urls) == {"square", "get_data"}, result.stdout
    assert _post(urls["square"], {"x": 7}) == {"square": 49}
    with urllib.request.urlopen(urls["get_data"] + "?user_id=123", timeout=120) as response:
        assert json.loads(response.read()) == {"user_id": "123", "data": "..."}
    run_cli(["app", "stop", "guide-endpoints"], sandbox_server)
