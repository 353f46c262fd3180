"""How late scheduled runs start: from a slot's time to the user function starting.

    python bench/schedules.py [--runs 20] [--period 1]

Starts a throwaway server, deploys an app with `schedule=Period(seconds=PERIOD)` whose function
records `time.time()` when it starts, and compares each run with its slot (the first `next_run`
that `app.show` reports after the deploy, plus k periods). The first run includes a cold
container start; the others reuse the warm container. Prints a Markdown table row.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from server_process import start_server  # noqa: E402

APP = '''
import time
import ferry

app = ferry.App("bench-schedules")


@app.function(schedule=ferry.Period(seconds={period}))
def stamp() -> None:
    started = time.time()
    with open({out!r}, "a") as f:
        f.write(f"{{started}}\\n")
'''


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--period", type=float, default=1.0)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home, out = Path(tmp) / "home", Path(tmp) / "stamps.txt"
        home.mkdir()
        app_file = Path(tmp) / "bench_schedule_app.py"
        app_file.write_text(APP.format(period=options.period, out=str(out)))
        server = start_server(home)
        env = {**os.environ, "FERRY_HOME": str(home), "FERRY_SERVER_URL": server["url"]}
        try:
            subprocess.run([sys.executable, "-m", "ferry", "deploy", str(app_file)], env=env,
                           check=True, capture_output=True)
            os.environ.update(FERRY_HOME=str(home), FERRY_SERVER_URL=server["url"])
            from ferry._client import Client

            info = Client.from_env_sync().request_sync("app.show", app="bench-schedules")
            anchor = info["functions"][0]["schedule"]["next_run"]
            deadline = time.monotonic() + options.runs * options.period + 60
            while time.monotonic() < deadline:
                stamps = out.read_text().split() if out.exists() else []
                if len(stamps) >= options.runs:
                    break
                time.sleep(0.2)
            starts = [float(s) for s in stamps[: options.runs]]
        finally:
            server["stop"]()
    late = [(t - (anchor + k * options.period)) * 1000 for k, t in enumerate(starts)]
    # run k belongs to slot k: none early, none a period late (a skipped or doubled slot)
    assert all(0 <= ms < options.period * 1000 for ms in late), f"runs off their slots: {late}"
    warm = sorted(late[1:])
    print("| period | runs | first run (cold) | warm p50 | warm max |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| {options.period:g} s | {len(starts)} | {late[0]:.0f} ms | "
          f"{statistics.median(warm):.1f} ms | {warm[-1]:.1f} ms |")


if __name__ == "__main__":
    main()
