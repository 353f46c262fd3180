"""An app on a Ray cluster whose nodes differ under FERRY_NODE_RUNTIME=auto
(tests/integration/test_cluster_mixed.py): the head (root) runs containers in sandboxes, the
`user` node (not root) as processes. cpu=3 fits only the user node, memory=2048 only the head.
Its containers run without pytest, so they live here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ferry

app = ferry.App("test-cluster-mixed")
with_a_step = ferry.Image.debian_slim().run_commands("echo from-a-step > /etc/step.txt")


def _here() -> dict[str, Any]:
    return {"cache": os.environ.get("FERRY_NODE_CACHE"), "uid": os.getuid(),
            "init": os.path.basename(os.readlink("/proc/1/exe")) if os.access("/proc/1/exe", os.R_OK) else None}


@app.function(cpu=3)
def on_user_node() -> dict[str, Any]:
    return _here()


@app.function(cpu=3, image=with_a_step)
def step_on_user_node() -> str:
    return Path("/etc/step.txt").read_text().strip()


@app.function(memory=2048, image=with_a_step)
def step_on_head() -> dict[str, Any]:
    return {**_here(), "step": Path("/etc/step.txt").read_text().strip()}
