"""GPU placement on a server whose inventory is declared with FERRY_GPUS (no GPU needed):
containers get exactly their devices, never share one, wait for a free one, and requests no
machine can meet fail fast."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

import ferry
from ferry.exception import InvalidError

from ..conftest import ServerProcess, run_cli

INVENTORY = "H100:2,T4:1"  # device indices: H100 0 and 1, T4 2

app = ferry.App("test-gpus")


def _placement() -> tuple[str | None, str | None, int]:
    return os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get("FERRY_GPU_TYPE"), os.getpid()


@app.function(gpu="H100")
def on_h100(delay: float = 0.0) -> tuple[str | None, str | None, int]:
    time.sleep(delay)
    return _placement()


@app.function(gpu="h100:2")
def on_two_h100() -> tuple[str | None, str | None, int]:
    return _placement()


@app.function(gpu=["A100", "T4"])
def on_fallback() -> tuple[str | None, str | None, int]:
    return _placement()


@app.function(gpu="any")
def on_any() -> tuple[str | None, str | None, int]:
    return _placement()


@app.function(gpu="T4", max_containers=3)
def on_t4(delay: float) -> tuple[float, float, str | None]:
    started = time.time()
    time.sleep(delay)
    return started, time.time(), os.environ.get("CUDA_VISIBLE_DEVICES")


@app.function(gpu="T4")
def other_t4() -> str | None:
    return os.environ.get("CUDA_VISIBLE_DEVICES")


@app.function()
def no_gpu() -> str | None:
    return os.environ.get("CUDA_VISIBLE_DEVICES")


impossible = ferry.App("test-gpus-impossible")


@impossible.function(gpu="B200")
def on_b200() -> None:
    return None


@pytest.fixture(scope="module")
def gpu_server(tmp_path_factory: pytest.TempPathFactory):
    server = ServerProcess.start(tmp_path_factory.mktemp("gpu-home"), extra_env={"FERRY_GPUS": INVENTORY})
    with server.used():
        yield server
    server.stop()


def test_each_container_gets_exactly_its_devices(gpu_server):
    with app.run(show_logs=False):
        visible, kind, _ = on_h100.remote()
        assert kind == "H100" and visible in ("0", "1")
        assert no_gpu.remote() is None
        visible, kind, _ = on_fallback.remote()
        assert (visible, kind) == ("2", "T4")  # no A100 here: the fallback list's T4
        assert on_any.remote()[0] in ("0", "1", "2")


def test_a_multi_gpu_request_gets_all_its_devices(gpu_server):
    with app.run(show_logs=False):
        visible, kind, _ = on_two_h100.remote()
        assert sorted(visible.split(",")) == ["0", "1"] and kind == "H100"


def test_two_containers_never_share_a_gpu(gpu_server):
    with app.run(show_logs=False):
        results = list(on_h100.map([2.0, 2.0]))
    assert len({pid for _, _, pid in results}) == 2  # two containers at once...
    assert sorted(visible for visible, _, _ in results) == ["0", "1"]  # ...on different devices


def test_inputs_wait_for_a_free_gpu(gpu_server):
    with app.run(show_logs=False):
        runs = sorted(on_t4.map([0.5, 0.5, 0.5]))
    assert all(visible == "2" for _, _, visible in runs)
    for (_, end, _), (start, _, _) in zip(runs, runs[1:]):
        assert start >= end - 0.05  # one T4: never two of these at the same time


def test_an_idle_container_gives_its_gpu_to_queued_work(gpu_server):
    with app.run(show_logs=False):
        assert other_t4.remote() == "2"  # now an idle container holds the only T4
        assert on_t4.remote(0.0)[2] == "2"
    # the idle container was asked to give its GPU back (not left to its 60 s scaledown window)
    assert "gave its GPU to queued work" in _stop_reasons(gpu_server)


def _stop_reasons(server: ServerProcess) -> list[str]:
    """Why the server's containers stopped, as it recorded them (state.db)."""
    db = sqlite3.connect(f"file:{server.home / 'state.db'}?mode=ro", uri=True, timeout=30)
    try:
        return [reason for (reason,) in db.execute("SELECT reason FROM containers WHERE stopped IS NOT NULL")]
    finally:
        db.close()


def test_a_request_no_machine_can_meet_fails_fast_naming_the_inventory(gpu_server):
    started = time.monotonic()
    with pytest.raises(InvalidError, match=r"gpu='B200'.*2x H100.*1x T4"):
        with impossible.run(show_logs=False):
            on_b200.remote()
    assert time.monotonic() - started < 60  # (a guard against waiting for a GPU forever only)


def test_server_status_lists_the_gpus(gpu_server, tmp_path: Path):
    result = run_cli(["server", "status"], gpu_server)
    assert result.returncode == 0, result.stderr
    assert "2x H100" in result.stdout and "1x T4" in result.stdout


sandboxed = ferry.App("test-gpus-sandbox")


@sandboxed.function(gpu="T4", image=ferry.Image.debian_slim())
def sandboxed_gpu() -> None:
    return None


def test_sandbox_without_the_driver_says_so_instead_of_hanging(tmp_path_factory: pytest.TempPathFactory,
                                                               monkeypatch: pytest.MonkeyPatch):
    """FERRY_GPUS declares a T4 that this machine does not have: the sandbox runtime cannot
    expose /dev/nvidia2 and the call fails with that reason."""
    server = ServerProcess.start(tmp_path_factory.mktemp("gpu-sandbox-home"),
                                 extra_env={"FERRY_GPUS": INVENTORY, "FERRY_RUNTIME": "sandbox"})
    server.use(monkeypatch)
    try:
        with pytest.raises(ferry.Error, match="nvidia2 does not exist"):
            with sandboxed.run(show_logs=False):
                sandboxed_gpu.remote()
    finally:
        server.stop()
