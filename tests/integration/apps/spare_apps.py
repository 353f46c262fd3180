"""Functions for the spare sandbox tests (test_sandbox_spares.py): each reports how its
container's process was started and what it can see."""

from __future__ import annotations

import os
from pathlib import Path

import ferry

IMAGE = ferry.Image.debian_slim(python_version="3.11").env({"SPARE_TEST_KIND": "spares"})
app = ferry.App("test-sandbox-spares", image=IMAGE)
volume = ferry.Volume.from_name("test-sandbox-spares-volume", create_if_missing=True)


def _report() -> dict:
    marker = Path("/tmp/spare-test-marker")
    seen_before = marker.exists()
    marker.write_text(str(os.getpid()))
    return {"cmdline": Path("/proc/self/cmdline").read_bytes().replace(b"\0", b" ").decode(),
            "container": os.environ.get("FERRY_CONTAINER_ID"), "secret": os.environ.get("SPARE_SECRET"),
            "marker_seen_before": seen_before, "pid": os.getpid()}


@app.function(secrets=[ferry.Secret.from_dict({"SPARE_SECRET": "s3cret"})])
def report() -> dict:
    return _report()


@app.function(volumes={"/data": volume})
def report_with_volume() -> dict:
    return _report()
