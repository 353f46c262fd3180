"""The functions bench/cluster.py calls through Ferry's ray runtime."""

import os
import time

import ferry

app = ferry.App("bench-cluster")


@app.function(max_containers=4)
def trivial(x: int) -> int:
    return x + 1


@app.function(max_containers=24)
def one_second(x: int) -> int:
    time.sleep(1.0)
    return x


@app.function(gpu="T4")  # the fake T4 is on a worker node: a container on another node than the server's
def remote_trivial(x: int) -> tuple[int, str | None]:
    return x + 1, os.environ.get("FERRY_NODE_ID")
