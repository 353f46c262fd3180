"""Schedules end to end, in real time, against real servers: a deployed `Period(seconds=...)`
app runs again and again (each run prints a line with its start time; the test reads the app's
logs, which works whatever the runtime isolates), `ferry app show` lists it with its next run,
it can still be called by hand, its state survives a server restart, and ephemeral apps only
print a notice.

Slot arithmetic, missed slots, redeploys and restarts with a controllable clock are covered by
tests/server/test_schedules.py."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import ferry
from ferry._client import Client

from ..conftest import ServerProcess, run_cli

WIDE = {"COLUMNS": "200"}

APP_SOURCE = '''
import time

import ferry

app = ferry.App({name!r})


@app.function(schedule=ferry.Period(seconds={seconds}))
def tick(source: str = "schedule") -> str:
    print(f"tick {{source}} at {{time.time():.3f}}")
    return source
'''

app = ferry.App("test-schedules-ephemeral")


@app.function(schedule=ferry.Period(seconds=1))
def ephemeral_tick() -> str:
    return "called by hand"


def _write_app(tmp_path: Path, seconds: float) -> tuple[Path, str]:
    """An app file with a scheduled `tick`: (file, app name)."""
    name = f"test-schedules-{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"scheduled_{uuid.uuid4().hex[:8]}.py"
    path.write_text(APP_SOURCE.format(name=name, seconds=seconds))
    return path, name


def _runs(server: ServerProcess, name: str, source: str = "schedule") -> list[float]:
    """Start times of the runs of `tick(source)`, from the app's stored logs (`ferry app logs`)."""
    logs = run_cli(["app", "logs", name], server)
    assert logs.returncode == 0, logs.stderr
    return sorted(float(t) for t in re.findall(rf"tick {source} at (\d+\.\d+)", logs.stdout))


def _wait_for_runs(server: ServerProcess, name: str, count: int, source: str = "schedule",
                   timeout: float = 60) -> list[float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = _runs(server, name, source)
        if len(runs) >= count:
            return runs
        time.sleep(0.1)
    raise AssertionError(f"expected {count} runs of tick({source!r}) within {timeout}s, "
                         f"saw {_runs(server, name, source)}")


def test_deployed_period_runs_repeatedly_shows_in_app_show_and_can_be_called_by_hand(server, tmp_path):
    path, name = _write_app(tmp_path, seconds=2)
    before_deploy = time.time()
    deployed = run_cli(["deploy", str(path)], server)
    assert deployed.returncode == 0, deployed.stderr
    try:
        runs = _wait_for_runs(server, name, 2)
        # one run per slot: the first slot is a period after the deploy, and the k-th run
        # cannot start before the k-th slot (a slower machine only starts them later)
        for k, started in enumerate(runs[:2]):
            assert started >= before_deploy + (k + 1) * 2, (k, runs, before_deploy)

        shown = run_cli(["app", "show", name], server, env=WIDE)
        assert shown.returncode == 0, shown.stderr
        line = next(line for line in shown.stdout.splitlines() if "schedule:" in line)
        assert "schedule: Period(seconds=2); next run " in line
        assert "last run " in line
        assert "schedule=" not in shown.stdout  # not repeated as a raw setting

        tick = ferry.Function.from_name(name, "tick")
        assert tick.remote("manual") == "manual"
        assert len(_wait_for_runs(server, name, 1, source="manual")) == 1
    finally:
        stopped = run_cli(["app", "stop", name], server)
        assert stopped.returncode == 0, stopped.stderr


def test_schedule_keeps_running_after_a_server_restart(tmp_path):
    home = tmp_path / "home"
    path, name = _write_app(tmp_path, seconds=1)
    proc = ServerProcess.start(home)
    try:
        deployed = run_cli(["deploy", str(path)], proc)
        assert deployed.returncode == 0, deployed.stderr
        _wait_for_runs(proc, name, 1)
        proc.stop()
        stopped_at = time.time()
        proc = ServerProcess.start(home)
        deadline = time.monotonic() + 60
        while len([t for t in _runs(proc, name) if t > stopped_at]) < 2:
            assert time.monotonic() < deadline, "the schedule did not resume after the restart"
            time.sleep(0.1)
        shown = run_cli(["app", "show", name], proc, env=WIDE)
        assert "schedule: Period(seconds=1); next run " in shown.stdout, shown.stdout + shown.stderr
    finally:
        proc.stop()


def test_ephemeral_app_prints_a_notice_and_schedules_nothing(server, capfd):
    with app.run(show_logs=False):
        notice = capfd.readouterr().err
        assert "Note: ephemeral_tick has a schedule; schedules run only for deployed apps (ferry deploy).\n" in notice
        info = Client.from_env_sync().request_sync("app.show", app=app.app_id)
        assert [f["schedule"] for f in info["functions"]] == [None]
        assert ephemeral_tick.remote() == "called by hand"


def test_example_scheduled_job_deploys_lists_next_runs_and_runs_by_hand(server):
    deployed = run_cli(["deploy", "examples/scheduled_job.py"], server)
    assert deployed.returncode == 0, deployed.stderr
    try:
        shown = run_cli(["app", "show", "scheduled-jobs"], server, env=WIDE)
        assert shown.returncode == 0, shown.stderr
        assert "schedule: Period(minutes=30); next run " in shown.stdout
        assert "schedule: Cron('0 8 * * 1', timezone='Europe/Paris'); next run " in shown.stdout
        assert ferry.Function.from_name("scheduled-jobs", "monday_report").remote() == "report sent"
    finally:
        run_cli(["app", "stop", "scheduled-jobs"], server)

    ran = run_cli(["run", "examples/scheduled_job.py"], server)
    assert ran.returncode == 0, ran.stderr
    assert "report sent" in ran.stdout
    assert "Note: frequent_job has a schedule; schedules run only for deployed apps (ferry deploy)." in ran.stderr
    assert "Note: monday_report has a schedule" in ran.stderr
