"""An app whose images the nodes of a Ray cluster under FERRY_NODE_RUNTIME=auto make ready when
it starts (tests/integration/test_cluster_node_prep.py): a sandbox node fetches the layers of
its sandbox images, a GPU node builds the venv of its GPU function (a GPU container runs as a
process where its GPUs have no device nodes, as on this machine). Their containers run without
pytest, so they live here."""

from __future__ import annotations

import os
import sys
from typing import Any

import ferry

app = ferry.App("test-cluster-node-prep")
# cpu=1.5: only on the head (4 CPUs), not on the GPU node (1 CPU)
a_image = ferry.Image.debian_slim().run_commands("echo layer-a > /etc/which.txt")
b_image = ferry.Image.debian_slim().run_commands("echo layer-b > /etc/which.txt")
t4_image = ferry.Image.debian_slim().pip_install("six==1.16.0").env({"BUILT": "ahead, for a T4"})


def _which() -> dict[str, Any]:
    return {"text": open("/etc/which.txt").read().strip(), "container": os.environ.get("FERRY_CONTAINER_ID")}


@app.function(image=a_image, cpu=1.5, scaledown_window=600)
def read_a() -> dict[str, Any]:
    return _which()


@app.function(image=b_image, cpu=1.5)
def read_b() -> dict[str, Any]:
    return _which()


@app.function(image=t4_image, gpu="T4", cpu=0.5)
def on_t4() -> dict[str, Any]:
    import six

    return {"prefix": sys.prefix, "six": six.__version__, "built": os.environ.get("BUILT")}
