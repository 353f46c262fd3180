"""The guide's LLM serving pattern (examples/llm_serving.py) on CPU: a class loading its model
from a volume in @enter, @concurrent, and a FastAPI endpoint that calls it."""

from __future__ import annotations

import json
import re
import urllib.request

from ..conftest import REPO, run_cli

EXAMPLE = str(REPO / "examples" / "llm_serving.py")


def test_llm_example_trains_into_a_volume_and_generates(sandbox_server):
    result = run_cli(["run", EXAMPLE, "--prompt", "the "], sandbox_server, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "model states: 24" in result.stdout
    assert "Loaded a model of 24 states from /models/bigram.json" in result.stdout
    generated = result.stdout.strip().splitlines()[-1]
    assert generated.startswith("the ") and len(generated) > len("the ")


def test_llm_example_endpoint_calls_the_model_class(sandbox_server):
    deployed = run_cli(["deploy", EXAMPLE], sandbox_server, timeout=600)
    assert deployed.returncode == 0, deployed.stderr
    try:
        run = run_cli(["run", f"{EXAMPLE}::prepare_model"], sandbox_server, timeout=600)
        assert run.returncode == 0, run.stderr
        url = re.search(r"generate_api => \S+\s+\(or (http://\S+?)\)", deployed.stdout).group(1)
        request = urllib.request.Request(url, data=json.dumps({"prompt": "the water", "max_tokens": 20}).encode(),
                                         method="POST", headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=300) as response:
            body = json.loads(response.read())
        assert body["result"].startswith("the water") and len(body["result"]) > len("the water")
    finally:
        run_cli(["app", "stop", "production-llm-server"], sandbox_server)
