"""Functions for the sandbox runtime's volume tests (tests/integration/test_volumes.py); they
run in sandboxes without pytest, so they live here."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import ferry

app = ferry.App("test-volumes-sandbox", image=ferry.Image.debian_slim(python_version="3.11"))
volume = ferry.Volume.from_name("test-volumes-sandbox", create_if_missing=True)


@app.function(volumes={"/data": volume})
def write(name: str, text: str) -> list[str]:
    Path("/data", name).write_text(text)
    volume.commit()
    return sorted(os.listdir("/data"))


@app.function(volumes={"/data": volume.read_only()})
def read_only(name: str) -> dict:
    """What a read-only mount allows: reading, not writing, not committing."""
    try:
        Path("/data", "attempt.txt").write_text("no")
        write_error = None
    except OSError as error:
        write_error = errno.errorcode.get(error.errno or 0, str(error.errno))
    try:
        volume.commit()
        commit_error = None
    except ferry.exception.InvalidError as error:
        commit_error = str(error)
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    return {"text": Path("/data", name).read_text(), "write_error": write_error, "commit_error": commit_error,
            "mounts": mounts, "root": sorted(os.listdir("/"))}


built = ferry.Volume.from_name("test-volumes-built", create_if_missing=True)


def fill_at_build_time() -> None:
    """An Image.run_function step: commits once itself, and again (automatically) on return."""
    Path("/cache/first.txt").write_text("committed by the step")
    built.commit()
    Path("/cache/second.txt").write_text("committed when the step returned")


built_image = ferry.Image.debian_slim(python_version="3.11").run_function(fill_at_build_time,
                                                                           volumes={"/cache": built})


@app.function(image=built_image, volumes={"/cache": built})
def read_built() -> dict:
    return {name: Path("/cache", name).read_text() for name in sorted(os.listdir("/cache"))}
