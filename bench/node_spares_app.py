"""The function bench/node_spares.py starts again and again on a sandbox node."""

import ferry

app = ferry.App("bench-node-spares")


@app.function(scaledown_window=2)
def where() -> bool:
    """Whether this container's process was a spare sandbox."""
    return b"ferry._container.spare" in open("/proc/self/cmdline", "rb").read()
