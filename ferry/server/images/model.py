"""What the image builder produces and the runtimes consume."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LayerPlan:
    """One layer to build or find: a step with its cache key (hash of definition and parent)."""

    index: int
    key: str
    parent: str
    kind: str
    args: dict[str, Any]
    label: str
    force: bool = False


@dataclass(frozen=True)
class ImageMount:
    """`add_local_*` files to mount at container start: `host_dir` holds them.

    kind "dir": `host_dir` at `remote_path`; "file": its one file at `remote_path`;
    "python": each top-level entry of `host_dir` under `remote_path` (/root), which is on
    PYTHONPATH (the process runtime puts `host_dir` itself on PYTHONPATH).
    """

    kind: str
    host_dir: Path
    remote_path: str


@dataclass(frozen=True)
class BuiltImage:
    """A built image, ready to start containers from.

    Sandbox: `layers` are the read-only overlay layers, base root filesystem first, and
    `python` is the interpreter inside the image. Process runtime: `layers` is empty and
    `python` is a host interpreter (a venv's, or the server's own for a plain image).
    `env` and `workdir` come from the image's steps; `recipe` is the SDK's recipe id (for
    `Image.imports()`); `mounts` are filled in per container (`ImageService.complete_spec`).
    Ray runtime: nothing is built on the control plane; `node_recipe` is what each node's
    agent builds (the wire recipe, its `build_id`, and per container the step secrets'
    environments as `secret_env`), and `python` is empty.
    """

    key: str
    python: str
    layers: tuple[Path, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    recipe: str = ""
    python_version: str = ""
    mounts: tuple[ImageMount, ...] = ()
    pythonpath: tuple[str, ...] = ()
    node_recipe: dict[str, Any] | None = field(default=None, repr=False)
