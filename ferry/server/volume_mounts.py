"""The host side of volume mounts: what a runtime prepares so that a container can hold its
volumes (the container fills them itself: ferry/_container/volumes.py).

For each volume of a container the runtime creates an empty host directory, the view, and
makes it appear at the mount path; the container writes it through a second, always-writable
path (its "stage"), so a `read_only()` mount can still be filled and reloaded. A host-wide
chunk cache, `$FERRY_HOME/volumes/cache`, saves fetching a chunk twice for containers on one
host.

    runtime   view lives in                        mount path                stage / cache
    sandbox   $FERRY_HOME/sandbox/<ct>/volumes/N   bwrap --bind (--ro-bind)  /var/lib/ferry/volumes/N, /cache
    (Image.run_function steps: as sandbox, in the step's staging directory; see prepare_build)
    process   $FERRY_HOME/volumes/views/<ct>/N     `mount --bind` in a       the host paths themselves
                                                   private mount namespace
    ray       as process, under the node's cache   (on the container's node) $FERRY_NODE_CACHE/home/...
              directory (runtimes/ray/agent.py)

The process runtime has no mount namespace of its own, so a container with volumes runs under
`unshare --mount` (root only) and its mount paths are created on the host as empty
directories if they do not exist; other host processes see only those empty directories.
"""

from __future__ import annotations

import json
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _config
from ..exception import InvalidError

SANDBOX_VOLUMES_DIR = "/var/lib/ferry/volumes"
SETUP_FAILED_EXIT_CODE = 125


def cache_dir(home: Path | None = None) -> Path:
    path = (home or _config.home()) / "volumes" / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class PreparedVolumes:
    """Bind mounts `(host, container path, read_only)`, the container's environment, and the
    host directories to delete when the container has ended."""

    binds: list[tuple[Path, str, bool]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cleanup: list[Path] = field(default_factory=list)
    scaffold: Path | None = None  # build steps: a lower layer holding the mount points

    def remove(self) -> None:
        for path in self.cleanup:
            shutil.rmtree(path, ignore_errors=True)

    def process_argv(self, argv: list[str]) -> list[str]:
        """`argv` run in a private mount namespace with the views bound at their mount paths."""
        lines = [f'fail() {{ echo "ferry: mounting volumes failed: $1" >&2; exit {SETUP_FAILED_EXIT_CODE}; }}']
        for host, inside, read_only in self.binds:
            lines.append(f"mount --bind {shlex.quote(str(host))} {shlex.quote(inside)} "
                         f"|| fail {shlex.quote('binding ' + inside)}")
            if read_only:
                lines.append(f"mount -o remount,bind,ro {shlex.quote(inside)} "
                             f"|| fail {shlex.quote('making ' + inside + ' read-only')}")
        lines.append('exec "$@"')
        return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", "\n".join(lines),
                "ferry-volumes", *argv]


def _specs(refs: tuple[dict[str, Any], ...], stages: list[str]) -> str:
    return json.dumps([{"path": r["path"], "stage": s, "id": r["id"], "name": r["name"],
                        "read_only": bool(r.get("read_only"))} for r, s in zip(refs, stages)])


def prepare_sandbox(refs: tuple[dict[str, Any], ...], root: Path, home: Path | None = None) -> PreparedVolumes:
    """Views under `root` (inside the container's scratch directory, deleted with it). `home`:
    where the chunk cache is, if not FERRY_HOME (a Ray node's cache, on its node)."""
    prepared = PreparedVolumes()
    cache = cache_dir(home)
    prepared.binds.append((cache, f"{SANDBOX_VOLUMES_DIR}/cache", False))
    stages = []
    for index, ref in enumerate(refs):
        view = root / str(index)
        view.mkdir(parents=True, exist_ok=True)
        stage = f"{SANDBOX_VOLUMES_DIR}/{index}"
        prepared.binds += [(view, stage, False), (view, ref["path"], bool(ref.get("read_only")))]
        stages.append(stage)
    prepared.env = {"FERRY_VOLUME_MOUNTS": _specs(refs, stages), "FERRY_VOLUME_CACHE": f"{SANDBOX_VOLUMES_DIR}/cache"}
    return prepared


def prepare_process(refs: tuple[dict[str, Any], ...], container_id: str,
                    home: Path | None = None) -> PreparedVolumes:
    """Views under `$FERRY_HOME/volumes/views/<container>`, bound by `process_argv`. `home`:
    another directory than FERRY_HOME (the ray runtime's node cache, on its node)."""
    root = (home or _config.home()) / "volumes" / "views" / container_id
    prepared = PreparedVolumes(cleanup=[root])
    stages = []
    for index, ref in enumerate(refs):
        view = root / str(index)
        view.mkdir(parents=True, exist_ok=True)
        mount_point = Path(ref["path"])
        try:
            mount_point.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            prepared.remove()
            raise InvalidError(f"Cannot mount a volume at {ref['path']}: the process runtime shares the host's "
                               "filesystem, where that path is a file. Choose another mount path.") from None
        prepared.binds.append((view, ref["path"], bool(ref.get("read_only"))))
        stages.append(str(view))
    prepared.env = {"FERRY_VOLUME_MOUNTS": _specs(refs, stages), "FERRY_VOLUME_CACHE": str(cache_dir(home))}
    return prepared


def prepare_build(refs: list[dict[str, Any]], root: Path) -> PreparedVolumes:
    """Volumes of an `Image.run_function` step, under `root` (the step's staging directory).

    As in a sandbox container, plus a `scaffold` layer with the mount points, so that binding
    them creates nothing in the image's layer. The step reaches the control plane at the URL
    the server recorded in `$FERRY_HOME/server.json` when it started (builds come later)."""
    from .._local_server import STATE_FILE

    prepared = prepare_sandbox(tuple(refs), root / "views")
    scaffold = root / "scaffold"
    for _, inside, _ in prepared.binds:
        (scaffold / inside.lstrip("/")).mkdir(parents=True, exist_ok=True)
    prepared.scaffold = scaffold
    state = json.loads((_config.home() / STATE_FILE).read_text())
    prepared.env["FERRY_SERVER_URL"] = state["url"]
    if state.get("tls_fingerprint"):  # a server bound beyond loopback serves TLS
        prepared.env["FERRY_TLS_FINGERPRINT"] = state["tls_fingerprint"]
    return prepared


def remove_stale_process_views() -> None:
    """Views left by containers of an earlier server run (their containers are gone)."""
    shutil.rmtree(_config.home() / "volumes" / "views", ignore_errors=True)
