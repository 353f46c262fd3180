"""The `ray` runtime: Ferry's containers on the nodes of an existing Ray cluster.

`runtime.py` is the control plane's side (one Ray actor per container, placed by Ray with the
container's resources), `agent.py` the node's side (the actor that starts the container there),
`gpus.py` the cluster's GPU inventory. See docs/cluster.md.
"""

from __future__ import annotations

from .runtime import DEFAULT_CPU, RayHandle, RayRuntime

__all__ = ["DEFAULT_CPU", "RayHandle", "RayRuntime"]
