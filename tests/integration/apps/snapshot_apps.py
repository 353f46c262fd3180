"""Classes with memory snapshots (test_snapshots.py). MARKS records, on the host (the process
runtime shares its filesystem), which process ran which hook."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import ferry

MARKS = Path("/tmp/ferry-test-snapshot-marks")

app = ferry.App("test-snapshots")


@app.cls(enable_memory_snapshot=True, secrets=[ferry.Secret.from_dict({"SNAP_SECRET": "s3cret"})])
class Snapped:
    @ferry.enter(snap=True)
    def load(self) -> None:
        MARKS.mkdir(exist_ok=True)
        (MARKS / f"snap-{os.getpid()}").touch()
        self.loaded_in = os.getpid()
        self.secret_at_snapshot = os.environ.get("SNAP_SECRET")
        self.cuda_at_snapshot = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.table = {n: n * n for n in range(10_000)}  # state made once, in the snapshot

    @ferry.enter()
    def ready(self) -> None:
        MARKS.mkdir(exist_ok=True)
        (MARKS / f"enter-{os.getpid()}").touch()
        self.ready_in = os.getpid()

    @ferry.method()
    def info(self) -> dict:
        return {"pid": os.getpid(), "session": os.getsid(0), "loaded_in": self.loaded_in,
                "ready_in": self.ready_in, "secret_at_snapshot": self.secret_at_snapshot,
                "secret": os.environ.get("SNAP_SECRET"), "cuda_at_snapshot": self.cuda_at_snapshot,
                "table": self.table[99]}


@app.cls(enable_memory_snapshot=True)
class FailsInSnapshot:
    @ferry.enter(snap=True)
    def load(self) -> None:
        if os.environ.get("CUDA_VISIBLE_DEVICES") == "":  # only while a snapshot is made
            raise RuntimeError("this hook refuses to run into a snapshot")
        self.loaded_in = os.getpid()
        self.token = uuid.uuid4().hex  # (pids repeat in sandboxes)

    @ferry.method()
    def info(self) -> dict:
        return {"pid": os.getpid(), "loaded_in": self.loaded_in, "token": self.token}
