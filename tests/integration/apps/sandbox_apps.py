"""Functions for the sandbox runtime tests (tests/integration/test_sandbox_runtime.py); they
run in sandboxes without pytest, so they live here."""

from __future__ import annotations

import os
from pathlib import Path

import ferry

app = ferry.App("test-sandbox-runtime", image=ferry.Image.debian_slim(python_version="3.11"))


@app.function()
def visible(paths: list[str]) -> dict:
    """What a function sees of the host: these paths, and every process."""
    processes = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                processes[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                pass
    return {"paths": {p: os.path.exists(p) for p in paths}, "processes": processes,
            "hostname": os.uname().nodename, "tmp": sorted(os.listdir("/tmp"))}


@app.function()
def write_then_read(path: str, text: str) -> tuple:
    """Whether `path` existed (from an earlier container), then write it."""
    existed = os.path.exists(path)
    Path(path).write_text(text)
    return existed, Path(path).read_text()


@app.function(memory=128)
def allocate(megabytes: int) -> int:
    blocks = [bytearray(1024 * 1024) for _ in range(megabytes)]
    return len(blocks)


@app.cls()
class WithExit:
    @ferry.enter()
    def start(self) -> None:
        self.started = True

    @ferry.method()
    def ping(self) -> int:
        return os.getpid()

    @ferry.exit()
    def stop(self) -> None:
        print("exit hook ran in the sandbox", flush=True)
