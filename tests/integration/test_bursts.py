"""Bursts against the autoscaler with real containers: a map scales out to exactly
`max_containers` and never beyond (sampled from `app.show` while it runs), `max_containers=1`
runs inputs one after another, `buffer_containers` keeps spare containers under load, and
`Function.update_autoscaler()` changes a deployed function without a redeploy."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import ferry
from ferry._client import Client

from ..conftest import ServerProcess
from ._gates import hold

app = ferry.App("test-bursts")


@app.function(max_containers=10)
def burst_ten(x: int, gate: str) -> int:
    hold(gate, x)  # until the test sees every container it expects ready (_opened_when_ready)
    time.sleep(0.2)
    return os.getpid()


@app.function(max_containers=1)
def serial(x: int) -> dict:
    start = time.time()
    time.sleep(0.3)
    return {"pid": os.getpid(), "start": start, "end": time.time()}


@app.function(max_containers=10, buffer_containers=2)
def buffered(x: int, gate: str) -> int:
    hold(gate, x)
    return os.getpid()


@app.function(max_containers=5, buffer_containers=2)
def buffered_capped(x: int, gate: str) -> int:
    hold(gate, x)
    return os.getpid()


deployed = ferry.App("test-bursts-deployed")


@deployed.function(scaledown_window=2)
def adjustable(x: int) -> dict:
    time.sleep(0.5)
    # when it ended, on the host's clock (the process runtime), and in which container
    return {"pid": os.getpid(), "container": os.environ["FERRY_CONTAINER_ID"], "end": time.time()}


class Sampler:
    """Polls `app.show` in a background thread and records live containers per sample."""

    def __init__(self, server, app_ref: str, tag: str) -> None:
        self._client = Client.for_url(server.url)
        self._app_ref, self._tag = app_ref, tag
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def live(self) -> list[dict]:
        info = self._client.request_sync("app.show", app=self._app_ref)
        (entry,) = [f for f in info["functions"] if f["tag"] == self._tag]
        return entry["containers"]  # every container that has not ended (draining included)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(len(self.live()))
            time.sleep(0.02)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def _entry(server, tag: str) -> dict:
    info = Client.for_url(server.url).request_sync("app.show", app="test-bursts-deployed")
    (entry,) = [f for f in info["functions"] if f["tag"] == tag]
    return entry


def _container_records(server, ids: set[str]) -> list[dict]:
    """The server's records of these containers (state.db: started, stopped, reason)."""
    db = sqlite3.connect(f"file:{server.home / 'state.db'}?mode=ro", uri=True, timeout=30)
    try:
        rows = db.execute(f"SELECT id, started, stopped, reason FROM containers WHERE id IN "
                          f"({','.join('?' * len(ids))})", sorted(ids)).fetchall()
    finally:
        db.close()
    return [dict(zip(("id", "started", "stopped", "reason"), row)) for row in rows]


@contextlib.contextmanager
def _opened_when_ready(sampler: Sampler, count: int, tmp_path: Path) -> Iterator[str]:
    """A gate (a directory, see _gates.py) that a thread opens once `count` containers of the
    sampled function are ready at the same time."""
    gate = tmp_path / "gate"
    failed: list[BaseException] = []

    def open_when_ready() -> None:
        try:
            wait_for(lambda: sum(c["state"] == "ready" for c in sampler.live()) >= count,
                     f"{count} ready containers", timeout=120)
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            failed.append(error)
        gate.touch()  # (also on failure: the held inputs end and the test reports it)

    opener = threading.Thread(target=open_when_ready, daemon=True)
    opener.start()
    yield str(tmp_path)
    opener.join(10)
    if failed:
        raise failed[0]


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def test_map_burst_uses_exactly_max_containers(server, tmp_path):
    with app.run(show_logs=False):
        with Sampler(server, app.app_id, "burst_ten") as sampler, _opened_when_ready(sampler, 10, tmp_path) as gate:
            pids = list(burst_ten.map(range(100), kwargs={"gate": gate}))
    assert len(pids) == 100
    assert len(set(pids)) == 10, sorted(set(pids))  # every container got work
    assert max(sampler.samples) == 10, sampler.samples  # and the limit was never overrun


def test_map_with_max_containers_one_runs_serially(server):
    with app.run(show_logs=False):
        with Sampler(server, app.app_id, "serial") as sampler:
            records = list(serial.map(range(10)))
    assert len({r["pid"] for r in records}) == 1, records
    ordered = sorted(records, key=lambda r: r["start"])
    for before, after in zip(ordered, ordered[1:]):
        assert after["start"] >= before["end"], (before, after)  # never two at once
    assert max(sampler.samples) == 1, sampler.samples


def test_buffer_containers_keep_spares_under_load(server, tmp_path):
    """Four inputs held until six containers are ready need four containers; buffer_containers=2
    adds two idle spares."""
    with app.run(show_logs=False):
        with Sampler(server, app.app_id, "buffered") as sampler, _opened_when_ready(sampler, 6, tmp_path) as gate:
            pids = list(buffered.map(range(4), kwargs={"gate": gate}))
    assert len(set(pids)) == 4, pids
    assert max(sampler.samples) == 6, sampler.samples  # required 4 + buffer 2


def test_buffer_containers_are_bounded_by_max_containers(server, tmp_path):
    with app.run(show_logs=False):
        with (Sampler(server, app.app_id, "buffered_capped") as sampler,
              _opened_when_ready(sampler, 5, tmp_path) as gate):
            pids = list(buffered_capped.map(range(4), kwargs={"gate": gate}))
    assert len(set(pids)) == 4, pids
    assert max(sampler.samples) == 5, sampler.samples  # 4 + 2 capped at max_containers=5


def test_update_autoscaler_changes_a_deployed_function_without_redeploy(server):
    deployed.deploy()
    try:
        fn = ferry.Function.from_name("test-bursts-deployed", "adjustable")
        sampler = Sampler(server, "test-bursts-deployed", "adjustable")
        assert sampler.live() == []  # nothing runs before a call

        fn.update_autoscaler(min_containers=2)
        wait_for(lambda: len([c for c in sampler.live() if c["state"] == "ready"]) == 2,
                 "two warm containers after min_containers=2")
        warm = {c["id"] for c in sampler.live()}
        served = fn.remote(0)  # served by a warm container: no new one started
        assert {c["id"] for c in sampler.live()} == warm

        fn.update_autoscaler(max_containers=1, min_containers=0)
        wait_for(lambda: len(sampler.live()) <= 1, "scale-down to max_containers=1")
        wait_for(lambda: sampler.live() == [], "scale-down to zero after scaledown_window=2")
        # each was kept for its 2 s window: stopped (as the server recorded it) no sooner than
        # 2 s after it became idle (after its last input ended; for the other, after it started)
        records = {r["id"]: r for r in _container_records(server, warm)}
        assert {r["reason"] for r in records.values()} == {"scaled down"}, records
        for record in records.values():
            assert record["stopped"] - record["started"] >= 2, record
        assert records[served["container"]]["stopped"] - served["end"] >= 2, (records, served)
        with sampler:
            pids = [r["pid"] for r in fn.map(range(4))]
        assert len(set(pids)) == 1, pids
        assert max(sampler.samples) == 1, sampler.samples
        assert _entry(server, "adjustable")["overrides"] == {"max_containers": 1, "min_containers": 0}

        deployed.deploy()  # a redeploy goes back to the decorator's settings
        assert _entry(server, "adjustable")["overrides"] == {}
    finally:
        Client.for_url(server.url).request_sync("app.stop", app="test-bursts-deployed")


def test_update_autoscaler_settings_survive_a_server_restart(tmp_path, monkeypatch):
    home = tmp_path / "home"
    first = ServerProcess.start(home)
    try:
        first.use(monkeypatch)
        deployed.deploy()
        ferry.Function.from_name("test-bursts-deployed", "adjustable").update_autoscaler(min_containers=1)
    finally:
        first.stop()
    second = ServerProcess.start(home)
    try:
        second.use(monkeypatch)
        sampler = Sampler(second, "test-bursts-deployed", "adjustable")
        wait_for(lambda: [c for c in sampler.live() if c["state"] == "ready"],
                 "the warm container of min_containers=1 after the restart")
        info = Client.for_url(second.url).request_sync("app.show", app="test-bursts-deployed")
        assert info["functions"][0]["overrides"] == {"min_containers": 1}
    finally:
        second.stop()
