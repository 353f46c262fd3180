"""Apps for images built on the nodes of a Ray cluster (tests/integration/test_cluster.py):
their containers run in venvs without pytest, so they live here."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import ferry

FILES = Path(__file__).resolve().parent / "image_files"
sys.path.insert(0, str(FILES))  # add_local_python_source("pkgdemo") finds it here
MOUNTED_FILE = "/tmp/ferry-cluster-image-files/data.txt"  # the test removes its mount point

app = ferry.App("test-cluster-images")
barrier = ferry.Dict.from_name("test-cluster-images-barrier", create_if_missing=True)

node_image = (ferry.Image.debian_slim().pip_install("six==1.16.0")
              .env({"GREETING": "from the node's venv"}).workdir("/tmp"))
files_image = (ferry.Image.debian_slim().add_local_python_source("pkgdemo")
               .add_local_file(FILES / "data.txt", MOUNTED_FILE))
failing_image = ferry.Image.debian_slim().pip_install("six", extra_options="--no-index")


@app.function(image=node_image, max_containers=4)
def six_on_a_node(containers: int) -> dict[str, Any]:
    """Holds its container until `containers` of them run (each input gets its own)."""
    import six

    barrier[os.getpid()] = True
    deadline = time.monotonic() + 300
    while barrier.len() < containers and time.monotonic() < deadline:
        time.sleep(0.2)
    return {"six": six.__version__, "prefix": sys.prefix, "greeting": os.environ.get("GREETING"),
            "cwd": os.getcwd(), "pid": os.getpid(), "cache": os.environ.get("FERRY_NODE_CACHE")}


@app.function(image=files_image)
def local_files() -> dict[str, Any]:
    import pkgdemo

    return {"pkgdemo": pkgdemo.VALUE, "pkgdemo_file": pkgdemo.__file__,
            "data": Path(MOUNTED_FILE).read_text(), "cache": os.environ.get("FERRY_NODE_CACHE")}


failing = ferry.App("test-cluster-images-failing")  # its start fails: the nodes build its image first


@failing.function(image=failing_image)
def never_built() -> int:
    return 1
