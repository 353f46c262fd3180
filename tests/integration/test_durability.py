"""Durable inputs (docs/reliability.md): SIGKILL of the server in the middle of a map, of a
blocking `.remote()` and of spawned calls, then a restart on the same FERRY_HOME and port;
SIGKILL of a container in the middle of an input. Every output reaches its caller once, in
order for an ordered map, and nothing queued is forgotten.

Each test starts its own servers (and ends them); the processes a killed server started end
when their connections to it drop (containers, zygotes)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import ferry
from ferry._client import RECONNECTED
from ferry.exception import ConnectionError, ContainerCrashError, NotFoundError
from ferry.server.access import ADMIN_ONLY, EVERYONE
from ferry.server.api import _AUDIENCES

from ..conftest import ServerProcess
from ._web import wait_for as wait_for_result
from .apps import auth_apps

app = ferry.App("test-durability")


@app.function(retries=0)
def attempt_then_wait(marker: str, seconds: float) -> str:
    """Record an attempt, then take `seconds`: a server killed meanwhile loses it running."""
    with open(marker, "a") as handle:
        handle.write("start\n")
    time.sleep(seconds)
    return "done"


@app.function(retries=2)
def crash_once(x: int, marker: str) -> int:
    """Input 1 waits, on its first attempt, to be killed with its container."""
    if x == 1 and not os.path.exists(marker):
        with open(marker + ".tmp", "w") as handle:
            handle.write(str(os.getpid()))
        os.rename(marker + ".tmp", marker)
        time.sleep(600)
    return x * 10


deployed = ferry.App("test-durability-deployed")


@deployed.function()
def triple(x: int) -> int:
    time.sleep(0.02)
    return 3 * x


@deployed.function(retries=ferry.Retries(max_retries=2, initial_delay=0.0, backoff_coefficient=1.0))
def fail_counting(marker: str) -> None:
    """Fails every attempt; the second waits (a server killed meanwhile loses it running)."""
    with open(marker, "a") as handle:
        handle.write("start\n")
    if Path(marker).read_text().count("start") == 2:
        time.sleep(600)
    raise ValueError("fails every time")


@app.function(retries=2)
def yield_then_wait(marker: str, fail: bool):
    """Yields two values, then fails (`fail`) or waits to be stopped."""
    with open(marker, "a") as handle:
        handle.write("start\n")
    yield 1
    yield 2
    if fail:
        raise ValueError("failed after yielding")
    time.sleep(600)


def wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def kill_and_restart(server: ServerProcess) -> ServerProcess:
    """SIGKILL `server` (nothing graceful) and start a new one on its FERRY_HOME and port."""
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(10)
    return ServerProcess.start(server.home, port=server.port)


MAP_SCRIPT = """
import sys, time, ferry

app = ferry.App("test-durable-map")

@app.function()
def square(x: int) -> int:
    time.sleep(0.004)
    return x * x

@app.local_entrypoint()
def main():
    outputs = []
    for value in square.map(range(2000)):
        outputs.append(value)
        if len(outputs) == 400:
            print("halfway", flush=True)
    print("outputs", ",".join(map(str, outputs)), flush=True)
"""


def test_map_survives_a_server_kill_with_every_output_once_in_order(tmp_path: Path):
    first = ServerProcess.start(tmp_path / "home")
    servers = [first]
    script = tmp_path / "durable_map.py"
    script.write_text(textwrap.dedent(MAP_SCRIPT))
    child = subprocess.Popen([sys.executable, "-m", "ferry", "run", str(script)],
                             env={**first.env(), "FERRY_RECONNECT_TIMEOUT": "60"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "halfway"
        wait_for(lambda: _journal_rows(first) > 0, "inputs held past the journal's grace to be written")
        servers.append(kill_and_restart(first))
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        line = [row for row in out.splitlines() if row.startswith("outputs ")][0]
        assert [int(v) for v in line.split(" ", 1)[1].split(",")] == [x * x for x in range(2000)]
        assert err.count(RECONNECTED) == 1, err
        # the second server resumed the call from its journal, and the call left nothing there
        assert "resumed 1 call(s)" in servers[1].log.read_text()
        wait_for(lambda: not _journal_rows(servers[1]), "the journal to be emptied")
        # the run's app stopped with it: its definitions, kept for the restart, are gone
        assert _rows(servers[1], "SELECT COUNT(*) FROM functions") == 0
    finally:
        _end(child, servers)


def test_a_run_whose_program_died_while_the_server_was_down_is_stopped_after_the_window(tmp_path: Path):
    """The `ferry run` process is killed too: its app and the map's inputs come back with the
    server, then the app is stopped and the journal emptied FERRY_RECONNECT_TIMEOUT later."""
    first = ServerProcess.start(tmp_path / "home")
    servers = [first]
    script = tmp_path / "durable_map.py"
    script.write_text(textwrap.dedent(MAP_SCRIPT))
    child = subprocess.Popen([sys.executable, "-m", "ferry", "run", str(script)], env=first.env(),
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "halfway"
        wait_for(lambda: _journal_rows(first) > 0, "inputs held past the journal's grace to be written")
        os.killpg(first.process.pid, signal.SIGKILL)
        first.process.wait(10)
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(10)
        second = ServerProcess.start(first.home, port=first.port, extra_env={"FERRY_RECONNECT_TIMEOUT": "3"})
        servers.append(second)
        assert "resumed 1 call(s)" in second.log.read_text()
        wait_for(lambda: _rows(second, "SELECT COUNT(*) FROM apps WHERE name='test-durable-map' "
                                       "AND state='stopped'") == 1, "the app to be stopped")
        wait_for(lambda: not _journal_rows(second), "the journal to be emptied")
        assert _rows(second, "SELECT COUNT(*) FROM functions") == 0
    finally:
        _end(child, servers)


def _end(child: subprocess.Popen, servers: list[ServerProcess]) -> None:
    """End the `ferry run` child (if still running) and every server a test started."""
    if child.poll() is None:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    for server in servers:
        server.stop(signal.SIGKILL)


def _rows(server: ServerProcess, query: str) -> int:
    import sqlite3

    with sqlite3.connect(server.home / "state.db") as db:
        return db.execute(query).fetchone()[0]


def _journal_rows(server: ServerProcess) -> int:
    return _rows(server, "SELECT COUNT(*) FROM call_inputs")


def test_blocking_remote_running_when_the_server_dies_runs_again_and_returns_once(
        tmp_path: Path, monkeypatch, capsys):
    first = ServerProcess.start(tmp_path / "home")
    first.use(monkeypatch)
    servers = [first]
    marker = tmp_path / "attempts"
    result: dict[str, object] = {}
    try:
        with app.run(show_logs=False):
            def call() -> None:
                try:
                    result["value"] = attempt_then_wait.remote(str(marker), 1.0)
                except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                    result["error"] = exc

            caller = threading.Thread(target=call)
            caller.start()
            wait_for(marker.exists, "the input to start")
            servers.append(kill_and_restart(first))
            caller.join(90)
            assert not caller.is_alive()
            assert result == {"value": "done"}
            # it was running when the server died: it ran again (at least once), and
            # returned once
            assert marker.read_text().count("start") == 2
            assert attempt_then_wait.remote(str(tmp_path / "later"), 0) == "done"
        assert RECONNECTED in capsys.readouterr().err
    finally:
        for server in servers:
            server.stop(signal.SIGKILL)


def test_spawned_calls_survive_a_server_kill_in_the_middle_of_spawning(tmp_path: Path, monkeypatch):
    """200 spawns, the server killed after the 50th: the spawns in flight are sent again (a call
    id is started once), the rest wait for the new server, and every call has its result."""
    first = ServerProcess.start(tmp_path / "home")
    first.use(monkeypatch)
    servers = [first]
    try:
        deployed.deploy(name="test-durability-deployed")
        calls: list[ferry.FunctionCall] = []
        errors: list[BaseException] = []
        spawner = threading.Thread(target=lambda: _capture(errors, lambda: calls.extend(
            triple.spawn(x) for x in range(200))))
        spawner.start()
        wait_for(lambda: _spawned_rows(first) >= 50, "50 spawned calls")
        servers.append(kill_and_restart(first))
        spawner.join(120)
        assert not spawner.is_alive() and not errors, errors
        assert len({c.object_id for c in calls}) == 200
        assert [ferry.FunctionCall.from_id(c.object_id).get(timeout=120) for c in calls] == [3 * x for x in range(200)]
        assert _spawned_rows(servers[1]) == 200  # none started twice
    finally:
        for server in servers:
            server.stop(signal.SIGKILL)


def _spawned_rows(server: ServerProcess) -> int:
    return _rows(server, "SELECT COUNT(*) FROM spawned_calls")


def test_container_killed_mid_input_is_retried_and_delivered_once(server, tmp_path: Path):
    marker = tmp_path / "pid"
    with app.run(show_logs=False):
        outputs: list[int] = []
        done = threading.Event()

        def run_map() -> None:
            outputs.extend(crash_once.map(range(3), kwargs={"marker": str(marker)}))
            done.set()

        threading.Thread(target=run_map, daemon=True).start()
        wait_for(marker.exists, "input 1 to start")
        os.kill(int(marker.read_text()), signal.SIGKILL)
        assert done.wait(90)
        assert outputs == [0, 10, 20]


def test_retry_counts_survive_a_server_kill(tmp_path: Path, monkeypatch):
    """A `.remote()` and a spawned call of a function with 2 retries that always fails: each
    fails once, its second attempt is running when the server is killed. After the restart the
    input runs again as that same attempt and fails, then once more, and the failure is
    delivered: 4 starts, not the 5 a count begun afresh would give."""
    first = ServerProcess.start(tmp_path / "home")
    first.use(monkeypatch)
    servers = [first]
    remote_marker, spawn_marker = tmp_path / "remote", tmp_path / "spawn"
    starts = lambda marker: marker.read_text().count("start") if marker.exists() else 0  # noqa: E731
    outcome: dict[str, BaseException] = {}
    try:
        deployed.deploy(name="test-durability-deployed")
        caller = threading.Thread(target=lambda: _capture_error(outcome, lambda: fail_counting.remote(str(remote_marker))))
        caller.start()
        spawned = fail_counting.spawn(str(spawn_marker))
        wait_for(lambda: starts(remote_marker) == 2 and starts(spawn_marker) == 2, "both second attempts")
        wait_for(lambda: _rows(first, "SELECT COUNT(*) FROM input_attempts WHERE attempt=1") == 2,
                 "both failures to be recorded")
        servers.append(kill_and_restart(first))
        caller.join(120)
        assert not caller.is_alive()
        assert isinstance(outcome.get("error"), ValueError), outcome
        with pytest.raises(ValueError, match="fails every time"):
            ferry.FunctionCall.from_id(spawned.object_id).get(timeout=120)
        assert starts(remote_marker) == 4 and starts(spawn_marker) == 4
        wait_for(lambda: _rows(servers[1], "SELECT COUNT(*) FROM input_attempts") == 0,
                 "the finished inputs' counts to be forgotten")
    finally:
        for server in servers:
            server.stop(signal.SIGKILL)


def _capture_error(outcome: dict[str, BaseException], action) -> None:
    try:
        action()
    except BaseException as exc:  # noqa: BLE001 - the test asserts on it
        outcome["error"] = exc


def test_a_generator_that_has_yielded_is_not_run_again(server, tmp_path: Path):
    """Its values would repeat: a generator whose container is stopped (as when its node is
    lost) after it yielded fails with an error saying so, and one that raises after yielding is
    not retried; either way its caller got each value once, and it ran once."""
    with app.run(show_logs=False):
        failed, failed_marker = [], tmp_path / "failed"
        with pytest.raises(ValueError, match="failed after yielding"):
            for value in yield_then_wait.remote_gen(str(failed_marker), True):
                failed.append(value)
        assert failed == [1, 2] and failed_marker.read_text().count("start") == 1

        stopped, stopped_marker = [], tmp_path / "stopped"
        client = ferry._client.Client.for_url(server.url)
        with pytest.raises(ContainerCrashError, match="after this generator had yielded 2 values"):
            for value in yield_then_wait.remote_gen(str(stopped_marker), False):
                stopped.append(value)
                if value == 2:
                    busy = wait_for_result(lambda: [c for c in client.request_sync("container.list", app="test-durability")
                                                    if c["inflight"] == 1], what="the generator's container")
                    assert client.request_sync("container.stop", container_id=busy[0]["id"])["requeued"] == 0
        assert stopped == [1, 2] and stopped_marker.read_text().count("start") == 1


def test_resume_and_attach_requests_declare_who_may_send_them(server, tmp_path: Path):
    """`app.attach` is an administrator's request; `call.resume` is every caller's (containers
    call functions too), and a call it does not hold starts afresh."""
    client = ferry._client.Client.for_url(server.url)
    with pytest.raises(NotFoundError, match="not running"):
        client.request_sync("app.attach", app_id="ap-0000000000000000")
    with app.run(show_logs=False):
        function_id = crash_once.object_id
        assert client.request_sync("call.resume", call_id="fc-00000000000000aa", function_id=function_id,
                                   have=[]) == {"known": []}
        client.request_sync("call.cancel", call_id="fc-00000000000000aa")
    assert _AUDIENCES["app.attach"] == ADMIN_ONLY and _AUDIENCES["call.resume"] == EVERYONE
    with auth_apps.app.run(show_logs=False):
        outcomes = auth_apps.try_requests.remote(["app.attach"])
    kind, message = outcomes["app.attach"]
    assert kind == "PermissionDeniedError" and "not permitted from inside a container" in message


def _blob_count(home: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(home / "blobs"))


def test_volume_is_old_or_new_after_a_server_kill_during_a_commit(tmp_path: Path, monkeypatch):
    """The server is killed once the chunks of a 300-file commit start arriving (they are
    uploaded, then the commit makes its manifest the head in one write): after the restart the
    volume holds every file of one version, never some of each."""
    first = ServerProcess.start(tmp_path / "home")
    first.use(monkeypatch)
    servers = [first]

    def write(version: int) -> None:
        volume = ferry.Volume.from_name("durable-volume", create_if_missing=True)
        with volume.batch_upload(force=True) as batch:
            for i in range(300):
                batch.put_file(io.BytesIO(f"v{version} file {i} ".encode() * 4000), f"/f{i:03d}.txt")

    def versions() -> dict[str, int]:
        volume = ferry.Volume.from_name("durable-volume")
        found: dict[str, int] = {}
        for entry in volume.listdir("/", recursive=True):
            found[entry.path] = int(b"".join(volume.read_file(entry.path)).split(b" ", 1)[0][1:])
        return found

    try:
        write(1)
        before = _blob_count(first.home)
        failed: list[BaseException] = []
        writer = threading.Thread(target=lambda: _capture(failed, lambda: write(2)))
        writer.start()
        wait_for(lambda: _blob_count(first.home) > before, "the commit's chunks to arrive")
        servers.append(kill_and_restart(first))
        writer.join(60)
        assert not writer.is_alive()
        found = versions()
        assert len(found) == 300 and len(set(found.values())) == 1, sorted(set(found.values()))
        assert set(found.values()) <= {1, 2}
        assert all(isinstance(exc, ConnectionError) for exc in failed), failed  # (it may have landed first)
        write(3)  # the volume takes commits after the restart
        assert set(versions().values()) == {3}
    finally:
        for server in servers:
            server.stop(signal.SIGKILL)


def _capture(errors: list[BaseException], action) -> None:
    try:
        action()
    except BaseException as exc:  # noqa: BLE001 - the test looks at what happened
        errors.append(exc)


def test_a_restarted_server_runs_the_journaled_inputs_and_keeps_ready_outputs(tmp_path: Path, monkeypatch):
    """The journal as a restart finds it (written here with the server down): input 0 has its
    output, input 1 has none. The caller resumes: it gets the kept output and the output of the
    input that ran after the restart, and an input it already had is not run or sent again."""
    import asyncio
    import sqlite3

    from ferry._serialization import deserialize, serialize, serialize_args
    from ferry._sync import run_sync
    from ferry.server.store import pack

    first = ServerProcess.start(tmp_path / "home")
    first.use(monkeypatch)
    servers = [first]
    try:
        deployed.deploy(name="test-durability-deployed")
        function_id = triple.object_id
        first.stop()
        rows = [(0, {"status": "ok", "data": serialize(100), "idx": 0}), (1, None), (2, None)]
        with sqlite3.connect(first.home / "state.db") as db:
            db.executemany(
                "INSERT INTO call_inputs(call_id, idx, function_id, kind, method, args, output) "
                "VALUES ('fc-00000000000000bb', ?, ?, 'map', NULL, ?, ?)",
                [(idx, function_id, pack({"data": serialize_args((idx,), {})}),
                  None if output is None else pack(output)) for idx, output in rows])
        second = ServerProcess.start(first.home, port=first.port)
        servers.append(second)
        client = ferry._client.Client.for_url(second.url)

        async def resume() -> tuple[dict, dict[int, int]]:
            queue: asyncio.Queue = asyncio.Queue()
            client.output_queues["fc-00000000000000bb"] = queue
            try:
                found = await client.request("call.resume", call_id="fc-00000000000000bb",
                                             function_id=function_id, have=[2])
                outputs: dict[int, int] = {}
                while len(outputs) < 2:
                    for item in await asyncio.wait_for(queue.get(), 60):
                        assert item["idx"] not in outputs
                        outputs[item["idx"]] = deserialize(item["data"])
                client.ack("fc-00000000000000bb")  # (all of them: the call leaves the journal)
                return found, outputs
            finally:
                client.output_queues.pop("fc-00000000000000bb", None)

        found, outputs = run_sync(resume())
        assert found == {"known": [0, 1]}
        assert outputs == {0: 100, 1: 3}  # 0: kept (never run again); 1: run after the restart
        wait_for(lambda: not _journal_rows(second), "the acknowledged call to leave the journal")
    finally:
        for server in servers:
            server.stop(signal.SIGKILL)
