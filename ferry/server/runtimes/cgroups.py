"""Per-container cgroups: memory and CPU limits, OOM detection, cleanup.

Each container gets `<parent>/<container_id>` (parent `ferry` by default) in the cgroup
hierarchy the host uses, detected at run time from /proc/self/mountinfo:

    v2  one unified hierarchy offering the memory and cpu controllers:
        memory.max, memory.swap.max, cpu.max, memory.events (oom_kill), memory.peak
    v1  one hierarchy per controller (memory, cpu):
        memory.limit_in_bytes, memory.memsw.limit_in_bytes, cpu.cfs_quota_us/cfs_period_us,
        memory.oom_control (oom_kill), memory.max_usage_in_bytes

v2 is preferred when its unified hierarchy offers the controllers (a "hybrid" host whose v2
hierarchy has none, with the controllers on v1, uses v1).
"""

from __future__ import annotations

import errno
import os
import re
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from ...exception import ExecutionError, InvalidError

CgroupVersion = Literal["v1", "v2"]

CPU_PERIOD_US: Final[int] = 100_000
_CONTROLLERS: Final[tuple[str, ...]] = ("memory", "cpu")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class CgroupLimits:
    """Resource limits of one container; None means unlimited."""

    memory_mb: int | None = None
    cpu: float | None = None

    def __post_init__(self) -> None:
        if self.memory_mb is not None and (isinstance(self.memory_mb, bool) or self.memory_mb <= 0):
            raise InvalidError(f"memory={self.memory_mb!r} must be a positive number of MiB.")
        if self.cpu is not None and not self.cpu > 0:
            raise InvalidError(f"cpu={self.cpu!r} must be a positive number of cores (e.g. 0.5).")

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory_mb is None else self.memory_mb * 1024 * 1024


@dataclass(frozen=True)
class _Hierarchy:
    version: CgroupVersion
    mounts: Mapping[str, Path]  # v1: controller -> mount point; v2: every controller -> the root


def _detect() -> _Hierarchy | str:
    """The usable hierarchy, or why there is none (a sentence saying how to fix it)."""
    v2_root: Path | None = None
    v1: dict[str, Path] = {}
    try:
        with open("/proc/self/mountinfo") as mountinfo:
            lines = mountinfo.read().splitlines()
    except OSError as exc:
        return f"/proc/self/mountinfo cannot be read ({exc}); is /proc mounted?"
    for line in lines:
        fields = line.split()
        try:
            sep = fields.index("-")
        except ValueError:
            continue
        mount_point, fstype, super_options = Path(fields[4]), fields[sep + 1], fields[sep + 3]
        if fstype == "cgroup2" and v2_root is None:
            v2_root = mount_point
        elif fstype == "cgroup":
            for option in super_options.split(","):
                if option in _CONTROLLERS:
                    v1.setdefault(option, mount_point)
    if v2_root is not None:
        offered = _read_words(v2_root / "cgroup.controllers")
        if all(c in offered for c in _CONTROLLERS):
            return _check_writable(_Hierarchy("v2", {c: v2_root for c in _CONTROLLERS}))
    if all(c in v1 for c in _CONTROLLERS):
        return _check_writable(_Hierarchy("v1", dict(v1)))
    if v2_root is None and not v1:
        return "no cgroup filesystem is mounted; mount one at /sys/fs/cgroup (cgroup2 preferred)."
    found = "no cgroup v2"
    if v2_root is not None:
        found = f"cgroup v2 at {v2_root} offers {_read_words(v2_root / 'cgroup.controllers')}"
    return (
        f"the memory and cpu controllers are not both available ({found}; cgroup v1 controllers "
        f"mounted: {sorted(v1) or 'none'}). Enable them (on v2: boot with the controllers in "
        f"the unified hierarchy, e.g. systemd.unified_cgroup_hierarchy=1)."
    )


def _check_writable(hierarchy: _Hierarchy) -> _Hierarchy | str:
    for mount in set(hierarchy.mounts.values()):
        if not os.access(mount, os.W_OK):
            return (
                f"the cgroup hierarchy at {mount} is not writable by this user; run the Ferry "
                f"server as root (or in a systemd unit with Delegate=yes)."
            )
    return hierarchy


def _read_words(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def cgroups_available() -> CgroupVersion | None:
    """"v1" or "v2" when per-container limits can be enforced here, else None.

    `cgroups_unavailable_reason()` says why not.
    """
    detected = _detect()
    return None if isinstance(detected, str) else detected.version


def cgroups_unavailable_reason() -> str | None:
    """Why limits cannot be enforced on this host (how to fix it), or None when they can."""
    detected = _detect()
    return detected if isinstance(detected, str) else None


class Cgroup:
    """The cgroup of one container: create with limits, add pids, inspect, destroy.

    Use as a context manager (or call `destroy()`), which kills what is left inside.
    """

    def __init__(self, hierarchy: _Hierarchy, paths: Mapping[str, Path]) -> None:
        self._hierarchy = hierarchy
        self._paths = dict(paths)  # controller -> directory

    @classmethod
    def create(cls, container_id: str, limits: CgroupLimits, *, parent: str = "ferry") -> Cgroup:
        """Create `<parent>/<container_id>` with `limits`; a stale one of that name is replaced."""
        for name in (container_id, *parent.split("/")):
            if not _NAME_RE.match(name) or name in (".", ".."):
                raise InvalidError(
                    f"{name!r} is not usable as a cgroup name: "
                    "use letters, digits, '_', '.' and '-'."
                )
        detected = _detect()
        if isinstance(detected, str):
            raise ExecutionError(f"Cannot enforce container limits: {detected}")
        if detected.version == "v2":
            root = detected.mounts["memory"]
            _enable_controllers(root, parent)
            paths = {c: root / parent / container_id for c in _CONTROLLERS}
        else:
            paths = {c: detected.mounts[c] / parent / container_id for c in _CONTROLLERS}
        stale = cls(detected, paths)
        if any(p.exists() for p in paths.values()):
            stale.destroy()
        for path in set(paths.values()):
            _mkdir(path)
        cgroup = cls(detected, paths)
        try:
            cgroup._apply(limits)
        except BaseException:
            cgroup.destroy()
            raise
        return cgroup

    @property
    def version(self) -> CgroupVersion:
        return self._hierarchy.version

    @property
    def paths(self) -> tuple[Path, ...]:
        """The container's cgroup directories (one on v2, one per controller on v1)."""
        return tuple(sorted(set(self._paths.values())))

    def path(self, controller: str) -> Path:
        """The directory holding `controller`'s files ("memory" or "cpu")."""
        return self._paths[controller]

    @property
    def procs_files(self) -> tuple[Path, ...]:
        """Where to write a pid to move it into this cgroup (all of them)."""
        return tuple(path / "cgroup.procs" for path in self.paths)

    def add_pid(self, pid: int) -> None:
        """Move process `pid` (not its existing children) into this cgroup."""
        for procs in self.procs_files:
            _write(procs, str(pid))

    def pids(self) -> list[int]:
        """The processes inside (host pids)."""
        found: set[int] = set()
        for procs in self.procs_files:
            found.update(int(word) for word in _read_words(procs))
        return sorted(found)

    def oom_kill_count(self) -> int:
        """How many processes the kernel killed here for exceeding the memory limit."""
        name = "memory.events" if self.version == "v2" else "memory.oom_control"
        for line in _read_lines(self._paths["memory"] / name):
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def oom_killed(self) -> bool:
        """Whether any process here was killed for exceeding the memory limit."""
        return self.oom_kill_count() > 0

    def memory_peak_bytes(self) -> int | None:
        """The highest memory use seen, where the kernel reports it (v2 needs Linux 5.19)."""
        name = "memory.peak" if self.version == "v2" else "memory.max_usage_in_bytes"
        try:
            return int((self._paths["memory"] / name).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def limits(self) -> CgroupLimits:
        """The limits in force, read back from the kernel."""
        memory = self._paths["memory"]
        cpu_dir = self._paths["cpu"]
        if self.version == "v2":
            raw_memory = _read_words(memory / "memory.max")
            memory_bytes = None if raw_memory in ([], ["max"]) else int(raw_memory[0])
            raw_cpu = _read_words(cpu_dir / "cpu.max")
            quota = -1 if not raw_cpu or raw_cpu[0] == "max" else int(raw_cpu[0])
            period = int(raw_cpu[1]) if len(raw_cpu) > 1 else CPU_PERIOD_US
        else:
            memory_bytes = int((memory / "memory.limit_in_bytes").read_text())
            if memory_bytes >= 2**62:  # v1 reports "unlimited" as a huge page-aligned number
                memory_bytes = None
            quota = int((cpu_dir / "cpu.cfs_quota_us").read_text())
            period = int((cpu_dir / "cpu.cfs_period_us").read_text())
        return CgroupLimits(
            memory_mb=None if memory_bytes is None else memory_bytes // (1024 * 1024),
            cpu=None if quota < 0 else quota / period,
        )

    def kill(self) -> None:
        """SIGKILL every process inside, until none is left."""
        kill_file = self._paths["memory"] / "cgroup.kill"
        if self.version == "v2" and kill_file.exists():
            _write(kill_file, "1")
        deadline = time.monotonic() + 5.0
        while pids := self.pids():
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                raise ExecutionError(
                    f"Processes {pids} in {self.paths[0]} survived SIGKILL for 5 s (stuck in "
                    f"the kernel, e.g. on a hung mount); kill them and remove the cgroup by hand."
                )
            time.sleep(0.01)

    def destroy(self) -> None:
        """Kill what is left inside and remove the cgroup directories (idempotent)."""
        if not any(path.exists() for path in self.paths):
            return
        self.kill()
        for path in self.paths:
            _rmdir(path)

    def __enter__(self) -> Cgroup:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.destroy()

    def __repr__(self) -> str:
        return f"Cgroup({self.version}, {', '.join(map(str, self.paths))})"

    def _apply(self, limits: CgroupLimits) -> None:
        memory = self._paths["memory"]
        cpu_dir = self._paths["cpu"]
        if self.version == "v2":
            if limits.memory_bytes is not None:
                _write(memory / "memory.max", str(limits.memory_bytes))
                if (memory / "memory.swap.max").exists():
                    _write(memory / "memory.swap.max", "0")
            if limits.cpu is not None:
                _write(cpu_dir / "cpu.max", f"{_quota_us(limits.cpu)} {CPU_PERIOD_US}")
        else:
            if limits.memory_bytes is not None:
                _write(memory / "memory.limit_in_bytes", str(limits.memory_bytes))
                if (memory / "memory.memsw.limit_in_bytes").exists():  # no swapping past it
                    _write(memory / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
            if limits.cpu is not None:
                _write(cpu_dir / "cpu.cfs_period_us", str(CPU_PERIOD_US))
                _write(cpu_dir / "cpu.cfs_quota_us", str(_quota_us(limits.cpu)))


def _quota_us(cpu: float) -> int:
    return max(1000, round(cpu * CPU_PERIOD_US))  # the kernel's minimum quota is 1 ms


def _enable_controllers(root: Path, parent: str) -> None:
    """On v2, let `parent`'s children use the memory and cpu controllers."""
    directory = root
    wanted = " ".join(f"+{c}" for c in _CONTROLLERS)
    for name in parent.split("/"):
        if not all(c in _read_words(directory / "cgroup.subtree_control") for c in _CONTROLLERS):
            _write(directory / "cgroup.subtree_control", wanted)
        directory = directory / name
        _mkdir(directory)
    if not all(c in _read_words(directory / "cgroup.subtree_control") for c in _CONTROLLERS):
        _write(directory / "cgroup.subtree_control", wanted)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExecutionError(
            f"Could not create cgroup {path}: {exc}. Run the Ferry server as root, or give it "
            f"a delegated cgroup."
        ) from exc


def _write(path: Path, value: str) -> None:
    try:
        with open(path, "w") as file:
            file.write(value)
    except OSError as exc:
        hint = ""
        if exc.errno == errno.EBUSY and path.name == "cgroup.subtree_control":
            hint = " (cgroup v2 forbids enabling controllers in a cgroup that holds processes)"
        raise ExecutionError(f"Could not write {value!r} to {path}: {exc}{hint}.") from exc


def _rmdir(path: Path) -> None:
    deadline = time.monotonic() + 2.0
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            # Exited processes can keep a cgroup busy until their parent reaps them.
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise ExecutionError(f"Could not remove cgroup {path}: {exc}.") from exc
            time.sleep(0.01)
