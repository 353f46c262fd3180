"""Debian root filesystems for sandboxes, built with `mmdebstrap` from Debian's packages.

One base root filesystem per Python version (Debian's own `python3`): bookworm gives 3.11,
trixie gives 3.13. Image steps become overlay layers on top of it (see `bwrap.SandboxSpec`).

The build is atomic: mmdebstrap writes into a temporary directory next to `dest`, which is
renamed to `dest` only once complete, so an interrupted build never leaves a half root at
`dest` (an existing `dest` is always complete).

mmdebstrap runs with `--mode=unshare` (also as root): its build-time mounts (/proc, /sys, /dev)
live in a private mount namespace and vanish with it, whereas `--mode=root` mounts them in the
host's namespace, where an interrupted build leaves them behind. As root both produce the same
tree (files owned by the real uid 0); unshare mode leaves /dev empty, which is fine because
bwrap mounts its own (`--dev /dev`). The tree is then shifted to the sandbox ids (ids.py), so
root inside a sandbox (host uid 1,000,000,000) owns it; `ensure_shifted` migrates a tree
built before that. The output is a directory, not a
tarball: overlayfs and bwrap need a directory, and a directory can be renamed into place.

/etc/resolv.conf is left empty in the tree (bwrap binds the host's at run time) and
/etc/hostname and /etc/hosts are neutral, so nothing of the build host is baked in.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal

from .... import _config
from ....exception import ExecutionError, InvalidError
from . import apt_sources
from .ids import shift_tree

PYTHON_SUITES: Final[Mapping[str, str]] = MappingProxyType({"3.11": "bookworm", "3.13": "trixie"})
"""Python version -> the Debian suite whose `python3` is that version."""

BASE_PACKAGES: Final[tuple[str, ...]] = (
    "ca-certificates", "python3", "python3-pip", "python3-venv",
)
"""Packages every base root filesystem has, whatever `include` adds."""

_SUITE_RE = re.compile(r"^[a-z][a-z0-9-]*$")
_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.\-]*(:[a-z0-9]+)?(=[A-Za-z0-9.+~:\-]+)?$")
DEFAULT_HOSTNAME: Final[str] = "ferry"
"""The hostname the root filesystem's /etc/hostname and /etc/hosts name."""

_HOSTS = (
    "127.0.0.1\tlocalhost\n"
    f"127.0.1.1\t{DEFAULT_HOSTNAME}\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
)
_TAIL_LINES = 30


def suite_for_python(version: str) -> str:
    """The Debian suite whose `python3` is `version` ("3.11" or "3.11.7" -> "bookworm")."""
    parts = version.strip().split(".")
    if len(parts) >= 2 and all(p.isdigit() for p in parts[:3]):
        suite = PYTHON_SUITES.get(f"{parts[0]}.{parts[1]}")
        if suite is not None:
            return suite
    available = ", ".join(f"{v} ({s})" for v, s in PYTHON_SUITES.items())
    raise InvalidError(
        f"Python {version!r} is not available in the sandbox runtime: its root filesystems use "
        f"Debian's own Python. Available versions: {available}. Pass one of them as "
        f"`python_version=`, or use the `process` runtime for other versions."
    )


STANDALONE_BASE_SUITE: Final[str] = "bookworm"
"""The Debian suite under a standalone Python (a version no suite ships, e.g. 3.10 or 3.12)."""

STANDALONE_PYTHONS: Final[tuple[str, ...]] = tuple(f"3.{minor}" for minor in range(9, 15))
"""Versions installable from standalone builds (python-build-standalone, through uv)."""


def python_source(version: str) -> tuple[str, str | None]:
    """Where Python `version` comes from: `(suite, None)` when a Debian suite ships it,
    `(STANDALONE_BASE_SUITE, version)` when it is installed from a standalone build."""
    parts = version.strip().split(".")
    if len(parts) >= 2 and all(p.isdigit() for p in parts[:3]) and len(parts) <= 3:
        if f"{parts[0]}.{parts[1]}" in PYTHON_SUITES:
            return suite_for_python(version), None
        if f"{parts[0]}.{parts[1]}" in STANDALONE_PYTHONS:
            return STANDALONE_BASE_SUITE, version.strip()
    debian = ", ".join(f"{v} ({s})" for v, s in PYTHON_SUITES.items())
    raise InvalidError(
        f"Python {version!r} is not available in the sandbox runtime. Debian ships {debian}; "
        f"{STANDALONE_PYTHONS[0]} to {STANDALONE_PYTHONS[-1]} are installed from standalone builds. "
        f"Pass one of them as `python_version=`."
    )


def build_base_rootfs(
    suite: str,
    dest: Path,
    *,
    include: Sequence[str] = (),
    log: Callable[[str], None] | None = None,
    sources: Sequence[str] | None = None,
    mode: Literal["unshare", "root"] = "unshare",
) -> Path:
    """Build a Debian `suite` root filesystem directory at `dest`, atomically; return `dest`.

    Installs `BASE_PACKAGES` plus `include` (`mmdebstrap --variant=apt`). mmdebstrap's output
    goes to `log` line by line. If another build finishes `dest` first, its result is kept.
    `sources` are apt source lines; by default FERRY_DEBIAN_MIRROR's, else the host's own
    (apt_sources.py), with the host's apt proxy.
    """
    dest = Path(dest).absolute()
    _validate(suite, include)
    if shutil.which("mmdebstrap") is None:
        raise ExecutionError(
            "mmdebstrap is not installed; the sandbox runtime builds root filesystems with it. "
            "Install it with `apt-get install -y mmdebstrap`."
        )
    if dest.exists():
        raise InvalidError(f"{dest} already exists; delete it to rebuild the root filesystem.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    packages = sorted({*BASE_PACKAGES, *include})
    if sources is None:
        sources = apt_sources.sources_for(suite, str(_config.get("debian_mirror") or ""))
    argv = [
        "mmdebstrap",
        f"--mode={mode}",
        "--variant=apt",
        "--format=directory",
        f"--include={','.join(packages)}",
        *apt_sources.proxy_options(),
        *apt_sources.key_hooks(sources),
        suite,
        str(partial),
        *sources,  # none: mmdebstrap's default mirror, with updates and security for stable releases
    ]
    try:
        _run_streaming(argv, log, sources)
        _neutralise_host_files(partial)
        shift_tree(partial)  # root inside sandboxes owns it (ids.py)
        try:
            os.rename(partial, dest)
        except OSError as exc:
            if not dest.is_dir():
                raise ExecutionError(
                    f"Could not move the new root filesystem to {dest}: {exc}"
                ) from exc
            if log is not None:
                log(f"{dest} was completed by another build meanwhile; keeping it")
            _remove_partial(partial, log)
    except BaseException:
        _remove_partial(partial, log)
        raise
    return dest


def _validate(suite: str, include: Sequence[str]) -> None:
    if not _SUITE_RE.match(suite):
        raise InvalidError(f"{suite!r} is not a Debian suite name (for example 'bookworm').")
    if isinstance(include, str):
        raise InvalidError("`include` must be a list of package names, not one string.")
    bad = [p for p in include if not _PACKAGE_RE.match(p)]
    if bad:
        raise InvalidError(f"Invalid Debian package name(s): {', '.join(map(repr, bad))}.")


def _run_streaming(argv: list[str], log: Callable[[str], None] | None, sources: Sequence[str] = ()) -> None:
    """Run mmdebstrap in its own process group, streaming lines; kill the group if interrupted."""
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip("\n")
            tail.append(line)
            if log is not None:
                log(line)
        code = process.wait()
    except BaseException:
        _kill_group(process)
        raise
    if code != 0:
        raise ExecutionError(
            f"mmdebstrap failed (exit code {code}) building a root filesystem. Check that the "
            f"apt sources ({apt_sources.describe(sources)}) are reachable (FERRY_DEBIAN_MIRROR "
            f"chooses another mirror) and the suite name is right. Last lines:\n"
            + "\n".join(tail)
        )


def _kill_group(process: subprocess.Popen[str]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _neutralise_host_files(root: Path) -> None:
    """Drop what mmdebstrap copied from the build host; resolv.conf is bound at run time."""
    etc = root / "etc"
    for name in ("resolv.conf", "hostname"):
        path = etc / name
        if path.is_symlink():
            path.unlink()
    (etc / "resolv.conf").write_text("")
    (etc / "hostname").write_text(f"{DEFAULT_HOSTNAME}\n")
    hosts = etc / "hosts"  # bookworm gets none (then "localhost" would need DNS), trixie one
    if not hosts.exists():
        hosts.write_text(_HOSTS)
    elif DEFAULT_HOSTNAME not in hosts.read_text().split():
        with hosts.open("a") as file:
            file.write(f"127.0.1.1\t{DEFAULT_HOSTNAME}\n")


def _remove_partial(partial: Path, log: Callable[[str], None] | None) -> None:
    """Delete an unfinished build, unless something is still mounted inside it."""
    if not partial.exists():
        return
    prefix = str(partial) + "/"
    with open("/proc/self/mountinfo") as mountinfo:
        mounted = [line.split()[4] for line in mountinfo if line.split()[4].startswith(prefix)]
    if mounted:
        if log is not None:
            log(f"not deleting {partial}: still mounted inside it: {', '.join(mounted)}")
        return
    shutil.rmtree(partial, ignore_errors=True)
