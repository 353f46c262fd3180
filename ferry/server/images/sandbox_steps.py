"""What each image step runs in the build sandbox, and running it.

A step runs in a sandbox whose read-only layers are the image so far (plus a tiny scaffold
of mount points, so bubblewrap never creates them in the layer) and whose writable upper
directory becomes the step's layer. Build steps get the network, and the host's CA bundle
read-only at `BUILD_DIR/ca-certificates.crt` with SSL_CERT_FILE, PIP_CERT, REQUESTS_CA_BUNDLE,
CURL_CA_BUNDLE and GIT_SSL_CAINFO pointing at it (hosts whose outbound HTTPS goes through a
TLS-intercepting proxy trust only that CA), and the host's proxy variables if set. Files a
step reads (requirements, a pickled function, files to copy) are bound under `BUILD_DIR`, a
private tmpfs (/tmp) that is not part of the layer. Steps run in the sandbox's user namespace
(root inside is host uid 1,000,000,000, runtimes/sandbox/ids.py), so the files they write are
owned by the sandbox ids, as every layer is; they share the host's network (pip, apt).
"""

from __future__ import annotations

import collections
import os
import shlex
import signal
import subprocess
import threading
from pathlib import Path
from typing import Callable

from ..runtimes.sandbox.bwrap import DEFAULT_PATH, BindMount, SandboxSpec, launch
from ..runtimes.sandbox.ids import shift_tree
from .commands import StepFailure

BUILD_DIR = "/tmp/.ferry-build"
FERRY_PACKAGE_DIR = "/opt/ferry"
_PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")
_TAIL = 40
_RUNNING: set[subprocess.Popen[bytes]] = set()  # build commands in progress, for kill_running()

RUN_FUNCTION = """\
import sys
sys.path.insert(0, {ferry!r})
from ferry._compat import install_modal_alias
install_modal_alias()
import cloudpickle
with open({path!r}, "rb") as handle:
    function, args, kwargs = cloudpickle.load(handle)
from ferry._container.volumes import mounted_for_build
with mounted_for_build():  # its volumes= (if any), committed when it returns
    function(*args, **kwargs)
"""


def scaffold(root: Path) -> Path:
    """A layer with the mount points builds use, topmost during builds only (owned by root
    inside sandboxes, as the directories it shadows)."""
    for relative in ("proc", "dev", "sys", "tmp", "opt/ferry/ferry", "root", "etc"):
        (root / relative).mkdir(parents=True, exist_ok=True)
    (root / "etc" / "resolv.conf").touch()
    shift_tree(root)
    return root


def build_env(image_env: dict[str, str], ca_bundle: str, secret_env: dict[str, str]) -> dict[str, str]:
    env = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8", "HOME": "/root", "DEBIAN_FRONTEND": "noninteractive",
           "PIP_NO_CACHE_DIR": "1", "PIP_ROOT_USER_ACTION": "ignore", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "UV_NO_CACHE": "1", "UV_LINK_MODE": "copy"}
    if ca_bundle:
        bundle = f"{BUILD_DIR}/ca-certificates.crt"
        for name in ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO"):
            env[name] = bundle
    for name in _PROXY_VARS:
        for variant in (name, name.upper()):
            if os.environ.get(variant):
                env[variant] = os.environ[variant]
    env.update(image_env)
    env.update(secret_env)
    return env


def apt_command(packages: list[str]) -> str:
    return ("apt-get update -q && apt-get install -y -q --no-install-recommends "
            + shlex.join(packages) + " && apt-get clean && rm -rf /var/lib/apt/lists/*")


def runtime_command(requirements: list[str]) -> str:
    """The Ferry runtime layer: the container's few dependencies in the image's Python."""
    pins = shlex.join(requirements)
    return (
        "PY=$(command -v python3 || command -v python) || "
        "{ echo 'The image has no python3: Ferry runs functions with the image Python.' >&2; exit 127; }; "
        "rm -f /usr/lib/python3*/EXTERNALLY-MANAGED /usr/local/lib/python3*/EXTERNALLY-MANAGED; "
        f"$PY -m pip --version >/dev/null 2>&1 || {{ echo \"$PY has no pip; install python3-pip in the image.\" >&2; exit 127; }}; "
        f"$PY -m pip install {pins} && "
        "echo \"FERRY_PYTHON=$PY $($PY -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])')\""
    )


STANDALONE_PYTHON_DIR = "/opt/python"
"""Where the standalone Python of `debian_slim(python_version=...)` is installed in the image."""


def standalone_python_command(version: str) -> str:
    """Install the standalone CPython `version` with uv (from UV_PYTHON_INSTALL_MIRROR when set)
    and make it the image's `python3`/`python`/`pip`; uv itself is not left in the image."""
    quoted = shlex.quote(version)
    return (
        "set -e; python3 -m venv /tmp/ferry-uv; /tmp/ferry-uv/bin/pip install --quiet uv; "
        f"/tmp/ferry-uv/bin/uv python install --install-dir {STANDALONE_PYTHON_DIR} {quoted}; "
        f"PY=$(ls -d {STANDALONE_PYTHON_DIR}/cpython-{quoted}*/bin/python3 | head -n 1); "
        f"find {STANDALONE_PYTHON_DIR} -name EXTERNALLY-MANAGED -delete; "
        "for name in python3 python; do ln -sf \"$PY\" /usr/local/bin/$name; done; "
        "ln -sf \"$(dirname \"$PY\")/pip3\" /usr/local/bin/pip3; ln -sf \"$(dirname \"$PY\")/pip3\" /usr/local/bin/pip; "
        "rm -rf /tmp/ferry-uv; /usr/local/bin/python3 --version"
    )


def run_sandboxed(*, layers: list[Path], upper: Path, work: Path, command: str, env: dict[str, str],
                  cwd: str, binds: list[BindMount], log: Callable[[str], None], timeout: float,
                  argv: list[str] | None = None) -> list[str]:
    """Run `command` with `sh -c` in a build sandbox; its writes go to `upper`.
    Returns the output lines; raises StepFailure on a non-zero exit or a timeout."""
    spec = SandboxSpec(layers=layers, argv=argv or ["/bin/sh", "-c", command], upper_dir=upper,
                       work_dir=work, binds=binds, env=env, cwd=cwd, network="host")
    process = launch(spec, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _RUNNING.add(process)
    lines: list[str] = []
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        _kill(process, wait=False)

    timer = threading.Timer(timeout, expire)
    timer.start()
    assert process.stdout is not None
    try:
        for raw in process.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            lines.append(line)
            tail.append(line)
            log(line)
        process.wait()
    except BaseException:
        _kill(process)
        raise
    finally:
        timer.cancel()
        _RUNNING.discard(process)
    if expired.is_set():
        raise StepFailure(command, None, list(tail), reason=f"timed out after {timeout:.0f} s")
    if process.returncode != 0:
        raise StepFailure(command, process.returncode, list(tail))
    return lines


def kill_running() -> None:
    """Kill every build command still running (the server is stopping)."""
    for process in list(_RUNNING):
        _kill(process, wait=False)


def _kill(process: subprocess.Popen[bytes], wait: bool = True) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if wait:
        process.wait()
