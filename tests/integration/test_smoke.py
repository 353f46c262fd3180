"""The shortest path through the system: one app, one call, via the SDK and the CLI."""

from __future__ import annotations

import ferry

from ..conftest import run_cli

app = ferry.App("test-smoke")


@app.function()
def square(x: int) -> int:
    return x * x


def test_remote_round_trip(server):
    with app.run(show_logs=False):
        assert square.remote(7) == 49


def test_cli_runs_hello_world(server):
    result = run_cli(["run", "examples/hello_world.py", "--who", "Ferry"], server)
    assert result.returncode == 0, result.stderr
    assert "Hello Ferry!" in result.stdout
    assert "Saying hello to Ferry from a container" in result.stdout
