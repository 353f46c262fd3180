"""`ferry app logs` prints an app's whole history, however long."""

from __future__ import annotations

import ferry

from ..conftest import run_cli

app = ferry.App("test-logs-history")


@app.function()
def chatty(lines: int) -> None:
    for n in range(lines):
        print(f"line {n}")


def test_app_logs_prints_more_than_one_page(server):
    with app.run(show_logs=False):
        chatty.remote(12_000)  # more than one 10,000-entry page of the logs API
    result = run_cli(["app", "logs", "test-logs-history"], server)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("line ")]
    assert lines[0] == "line 0" and lines[-1] == "line 11999"
    assert len(lines) == 12_000
