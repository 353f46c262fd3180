# Host packages these tests need (Debian 12, run as root):
#     apt-get update && apt-get install -y bubblewrap mmdebstrap uidmap passt
# (plus `mount` and `util-linux`, which every Debian has), network access to deb.debian.org,
# cgroups (v1 or v2) with the memory and cpu controllers, and overlayfs.
"""Real sandboxes: a bookworm root filesystem, bubblewrap, overlayfs and cgroups, not mocks.

The base root filesystem is built once (about 15 s) into `$FERRY_TEST_ROOTFS_CACHE` or
/var/cache/ferry-test/rootfs-bookworm and reused by later runs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ferry.exception import InvalidError
from ferry.server.runtimes import cgroups
from ferry.server.runtimes.sandbox.bwrap import (
    DEFAULT_ENV,
    SETUP_FAILED_EXIT_CODE,
    BindMount,
    SandboxSpec,
    build_bwrap_argv,
    check_sandbox_support,
    launch,
    launch_async,
    signal_command,
)
from ferry.server.runtimes.cgroups import (
    Cgroup,
    CgroupLimits,
    cgroups_available,
    cgroups_unavailable_reason,
)
from ferry.server.runtimes.sandbox.ids import SANDBOX_IDS, ensure_shifted, shift_tree
from ferry.server.runtimes.sandbox.network import PID_DIR, pasta_unavailable_reason, resolv_conf
from ferry.server.runtimes.sandbox.rootfs import (
    PYTHON_SUITES,
    build_base_rootfs,
    python_source,
    suite_for_python,
)

DEFAULT_CACHE = Path("/var/cache/ferry-test/rootfs-bookworm")


@pytest.fixture(scope="session")
def rootfs() -> Path:
    """A complete bookworm root filesystem (an existing `dest` is complete: builds rename)."""
    check_sandbox_support()
    path = Path(os.environ.get("FERRY_TEST_ROOTFS_CACHE") or DEFAULT_CACHE)
    if not path.exists():
        started = time.monotonic()
        build_base_rootfs("bookworm", path, log=lambda line: print(f"mmdebstrap: {line}"))
        print(f"built {path} in {time.monotonic() - started:.1f} s")
    assert (path / "usr/bin/python3").exists(), f"{path} is not a root filesystem; delete it"
    ensure_shifted(path)  # built before sandboxes had user namespaces
    return path


@pytest.fixture
def cgroup_name() -> Iterator[str]:
    yield f"test-{uuid.uuid4().hex[:12]}"


def run(
    spec: SandboxSpec, cgroup: Cgroup | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    process = launch(spec, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cgroup=cgroup)
    out, err = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(spec.argv, process.returncode, out.decode(), err.decode())


def python(rootfs: Path, code: str, **kwargs: object) -> SandboxSpec:
    return SandboxSpec([rootfs], ["python3", "-c", code], **kwargs)  # type: ignore[arg-type]


def test_python_inside_is_debian_3_11(rootfs: Path) -> None:
    code = "import sys; print(sys.version_info[:2], open('/etc/debian_version').read())"
    result = run(python(rootfs, code))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("(3, 11) 12.")


def test_host_files_are_invisible(rootfs: Path, tmp_path: Path) -> None:
    secret = tmp_path / "host-secret.txt"
    secret.write_text("host only")
    bound = tmp_path / "bound"
    bound.mkdir()
    code = (
        f"import os; print(os.path.exists({str(secret)!r}), os.path.exists({__file__!r}),"
        "os.listdir('/data'))"
    )
    result = run(python(rootfs, code, binds=[(bound, "/data", True)]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "[]"]


def test_host_processes_are_invisible(rootfs: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        code = "import os; print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))"
        result = run(python(rootfs, code))
    finally:
        sleeper.kill()
        sleeper.wait()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[1, 2]"  # bwrap's init and python itself
    assert sleeper.pid not in (1, 2)


def test_writes_go_to_the_upper_layer_lower_layers_unchanged(rootfs: Path, tmp_path: Path) -> None:
    before = sorted(os.listdir(rootfs)), (rootfs / "etc/issue").read_bytes()
    upper, work = tmp_path / "layer1", tmp_path / "work1"
    code = (
        "import os; open('/hello.txt', 'w').write('hi'); os.remove('/etc/issue');"
        "open('/etc/motd', 'a').write('changed')"
    )
    result = run(python(rootfs, code, upper_dir=upper, work_dir=work))
    assert result.returncode == 0, result.stderr
    assert (upper / "hello.txt").read_text() == "hi"
    assert stat.S_ISCHR((upper / "etc/issue").lstat().st_mode)  # an overlayfs whiteout
    assert (upper / "etc/motd").read_text().endswith("changed")
    assert (sorted(os.listdir(rootfs)), (rootfs / "etc/issue").read_bytes()) == before
    assert not (rootfs / "etc/motd").read_text().endswith("changed")

    # The upper layer stacks as a read-only layer of the next sandbox (an image step).
    check = "import os; print(open('/hello.txt').read(), os.path.exists('/etc/issue'))"
    stacked = run(SandboxSpec([rootfs, upper], ["python3", "-c", check]))
    assert stacked.returncode == 0, stacked.stderr
    assert stacked.stdout.split() == ["hi", "False"]


def test_tmpfs_upper_layer_is_discarded(rootfs: Path) -> None:
    assert run(python(rootfs, "open('/scratch.txt', 'w').write('x')")).returncode == 0
    result = run(python(rootfs, "import os; print(os.path.exists('/scratch.txt'))"))
    assert result.stdout.strip() == "False"
    assert not (rootfs / "scratch.txt").exists()


def test_read_only_bind_can_be_read_not_written(rootfs: Path, tmp_path: Path) -> None:
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    os.chown(rw, SANDBOX_IDS.base, SANDBOX_IDS.base)  # root inside is that host id
    (ro / "data.txt").write_text("payload")
    code = (
        "print(open('/ro/data.txt').read())\n"
        "try:\n    open('/ro/new.txt', 'w')\nexcept OSError as e:\n    print(e.errno)\n"
        "open('/rw/out.txt', 'w').write('written')\n"
    )
    binds = [BindMount(ro, "/ro", True), BindMount(rw, "/rw", False)]
    result = run(python(rootfs, code, binds=binds))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["payload", "30"]  # EROFS
    assert not (ro / "new.txt").exists()
    assert (rw / "out.txt").read_text() == "written"


def test_binds_inside_a_read_only_directory_bind(rootfs: Path, tmp_path: Path) -> None:
    """add_local_dir at /app with another directory at /app/data and a file at /app/conf/x.json
    inside it: each is seen where it was put, the outer directory's own files as they are (a
    symlink still a symlink, resolved inside the sandbox), nothing writable, no host directory
    changed."""
    app, data, conf = tmp_path / "app", tmp_path / "data", tmp_path / "x.json"
    (app / "conf").mkdir(parents=True)
    (app / "main.py").write_text("main")
    (app / "conf" / "other.json").write_text("other")
    (app / "conf" / "x.json").write_text("replaced by the file bind")
    (app / "passwd").symlink_to("/etc/passwd")  # the sandbox's, not the host's
    data.mkdir()
    (data / "rows.csv").write_text("rows")
    conf.write_text("bound file")
    code = (
        "import os\n"
        "print(open('/app/main.py').read(), open('/app/data/rows.csv').read().replace(' ', '_'),\n"
        "      open('/app/conf/x.json').read().replace(' ', '_'), open('/app/conf/other.json').read(),\n"
        "      os.readlink('/app/passwd'), open('/app/passwd').read() == open('/etc/passwd').read())\n"
        "for path in ('/app/new.txt', '/app/conf/new.txt', '/app/data/new.txt'):\n"
        "    try:\n        open(path, 'w')\n    except OSError as e:\n        print(e.errno)\n"
    )
    binds = [BindMount(app, "/app", True), BindMount(data, "/app/data", True), BindMount(conf, "/app/conf/x.json", True)]
    result = run(python(rootfs, code, binds=binds))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["main", "rows", "bound_file", "other", "/etc/passwd", "True"]
    assert lines[1:] == ["30", "30", "30"], lines  # EROFS
    assert sorted(p.name for p in app.iterdir()) == ["conf", "main.py", "passwd"]  # no mount point made
    assert sorted(p.name for p in (app / "conf").iterdir()) == ["other.json", "x.json"]


def test_tmp_is_private(rootfs: Path, tmp_path: Path) -> None:
    assert str(tmp_path).startswith("/tmp/")
    code = (
        "import os; print(os.listdir('/tmp')); open('/tmp/inside.txt', 'w').write('x');"
        "print([l.split()[2] for l in open('/proc/mounts') if l.split()[1] == '/tmp'])"
    )
    result = run(python(rootfs, code))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["[]", "['tmpfs']"]
    assert not Path("/tmp/inside.txt").exists()


def test_environment_is_exactly_the_spec(rootfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_TEST_HOST_ONLY", "leak")
    env = {**DEFAULT_ENV, "GREETING": "hello world", "EMPTY": ""}
    result = run(python(rootfs, "import os; print(repr(dict(os.environ)))", env=env, cwd="/tmp"))
    assert result.returncode == 0, result.stderr
    assert eval(result.stdout) == {**env, "PWD": "/tmp"}  # bwrap adds PWD


def test_memory_limit_oom_kills(rootfs: Path, cgroup_name: str) -> None:
    with Cgroup.create(cgroup_name, CgroupLimits(memory_mb=64)) as cgroup:
        assert cgroup.limits().memory_mb == 64
        assert not cgroup.oom_killed()
        result = run(python(rootfs, "data = b'x' * (256 << 20); print('survived')"), cgroup)
        assert "survived" not in result.stdout
        assert result.returncode == 128 + signal.SIGKILL
        assert cgroup.oom_killed()
        peak = cgroup.memory_peak_bytes()
        assert peak is None or peak <= 64 << 20


def test_cpu_limit_is_applied_and_throttles(rootfs: Path, cgroup_name: str) -> None:
    with Cgroup.create(cgroup_name, CgroupLimits(cpu=0.25)) as cgroup:
        assert cgroup.limits() == CgroupLimits(memory_mb=None, cpu=0.25)
        cpu_dir = cgroup.path("cpu")
        if cgroup.version == "v2":
            assert (cpu_dir / "cpu.max").read_text().split() == ["25000", "100000"]
        else:
            assert (cpu_dir / "cpu.cfs_quota_us").read_text().strip() == "25000"
            assert (cpu_dir / "cpu.cfs_period_us").read_text().strip() == "100000"
        busy = "import time\nend = time.time() + 0.5\nwhile time.time() < end: pass"
        result = run(python(rootfs, busy), cgroup)
        assert result.returncode == 0, result.stderr
        throttled = dict(line.split() for line in (cpu_dir / "cpu.stat").read_text().splitlines())
        assert int(throttled["nr_throttled"]) > 0


def test_process_is_in_the_cgroup_and_destroy_kills_it(rootfs: Path, cgroup_name: str) -> None:
    cgroup = Cgroup.create(cgroup_name, CgroupLimits(memory_mb=256, cpu=1))
    process = launch(python(rootfs, "import time; print('up', flush=True); time.sleep(60)"),
                     stdout=subprocess.PIPE, cgroup=cgroup)
    assert process.stdout is not None and process.stdout.readline() == b"up\n"
    pids = cgroup.pids()
    assert process.pid in pids and len(pids) == 3  # bwrap, bwrap's init, python
    cgroup.destroy()
    assert process.wait(timeout=10) == -signal.SIGKILL
    assert not any(path.exists() for path in cgroup.paths)
    cgroup.destroy()  # idempotent


def test_cgroups_are_available_here() -> None:
    assert cgroups_available() in ("v1", "v2"), cgroups_unavailable_reason()
    assert cgroups_unavailable_reason() is None


def test_cgroup_v2_files(tmp_path: Path) -> None:
    """This host uses v1, so the v2 file formats are checked on a plain directory."""
    hierarchy = cgroups._Hierarchy("v2", {"memory": tmp_path, "cpu": tmp_path})
    group = Cgroup(hierarchy, {"memory": tmp_path, "cpu": tmp_path})
    (tmp_path / "memory.swap.max").write_text("max\n")
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    group._apply(CgroupLimits(memory_mb=64, cpu=1.5))
    assert (tmp_path / "memory.max").read_text() == str(64 << 20)
    assert (tmp_path / "memory.swap.max").read_text() == "0"
    assert (tmp_path / "cpu.max").read_text() == "150000 100000"
    assert group.limits() == CgroupLimits(memory_mb=64, cpu=1.5)
    assert group.oom_killed() and group.memory_peak_bytes() is None


def test_limits_are_validated() -> None:
    with pytest.raises(InvalidError, match="positive"):
        CgroupLimits(memory_mb=0)
    with pytest.raises(InvalidError, match="cores"):
        CgroupLimits(cpu=-1)
    with pytest.raises(InvalidError, match="cgroup name"):
        Cgroup.create("../escape", CgroupLimits())


def test_suite_for_python() -> None:
    assert suite_for_python("3.11") == "bookworm"
    assert suite_for_python("3.11.9") == "bookworm"
    assert suite_for_python("3.13") == "trixie"
    with pytest.raises(InvalidError) as error:
        suite_for_python("3.12")
    assert "3.11 (bookworm)" in str(error.value) and "3.13 (trixie)" in str(error.value)
    assert dict(PYTHON_SUITES) == {"3.11": "bookworm", "3.13": "trixie"}


def test_python_source_picks_debian_or_a_standalone_build() -> None:
    assert python_source("3.11") == ("bookworm", None)
    assert python_source("3.13.1") == ("trixie", None)
    assert python_source("3.12") == ("bookworm", "3.12")
    assert python_source("3.10.14") == ("bookworm", "3.10.14")
    for wrong in ("3.7", "2.7", "3", "three.twelve", "3.12.1.4"):
        with pytest.raises(InvalidError) as error:
            python_source(wrong)
        assert "Debian ships 3.11 (bookworm), 3.13 (trixie)" in str(error.value)


def test_network_host_with_dns_or_private(rootfs: Path) -> None:
    code = "import socket; print(len(socket.getaddrinfo('deb.debian.org', 80)) > 0)"
    shared = run(python(rootfs, code, network="host"))
    assert shared.returncode == 0, shared.stderr
    assert shared.stdout.strip() == "True"
    code = "import socket; print(socket.if_nameindex())"
    private = run(python(rootfs, code))  # the default: loopback only
    assert private.stdout.strip() == "[(1, 'lo')]"


def test_sandbox_cannot_mount(rootfs: Path) -> None:
    code = (
        "import ctypes, os; libc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.mount(b'none', b'/mnt', b'tmpfs', 0, None), ctypes.get_errno() == 1)\n"
        "status = open('/proc/self/status').read()\n"
        "caps = int(status.split('CapEff:')[1].split()[0], 16)\n"
        "print(bool(caps & (1 << 21)), bool(caps & (1 << 27)))  # CAP_SYS_ADMIN, CAP_MKNOD\n"
    )
    result = run(python(rootfs, code))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["-1", "True", "False", "False"]


def test_devices_are_exposed_on_request(rootfs: Path) -> None:
    code = (
        "import os, stat\n"
        "print(os.path.exists('/dev/kmsg') and stat.S_ISCHR(os.stat('/dev/kmsg').st_mode))"
    )
    assert run(python(rootfs, code)).stdout.strip() == "False"
    assert run(python(rootfs, code, devices=["/dev/kmsg"])).stdout.strip() == "True"


def test_setup_failure_has_its_own_exit_code(rootfs: Path, tmp_path: Path) -> None:
    shm = Path("/dev/shm") / f"ferry-test-{uuid.uuid4().hex[:8]}"
    try:  # upper and work dirs on different filesystems: overlayfs refuses
        result = run(python(rootfs, "pass", upper_dir=tmp_path / "upper", work_dir=shm))
    finally:
        shm.rmdir()
    assert result.returncode == SETUP_FAILED_EXIT_CODE
    assert "ferry sandbox setup failed: mounting the overlay root" in result.stderr


def test_signal_command_reaches_the_command(rootfs: Path) -> None:
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n"
        "print('ready', flush=True)\ntime.sleep(60)\n"
    )
    process = launch(python(rootfs, code), stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    assert len(signal_command(process.pid, signal.SIGTERM)) == 1
    assert process.wait(timeout=10) == 7


def test_launch_async(rootfs: Path) -> None:
    async def main() -> tuple[bytes, int]:
        spec = python(rootfs, "print('async')")
        process = await launch_async(spec, stdout=asyncio.subprocess.PIPE)
        out, _ = await process.communicate()
        return out, await process.wait()

    assert asyncio.run(main()) == (b"async\n", 0)


def test_spec_validation(rootfs: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidError, match="both `upper_dir` and `work_dir`"):
        SandboxSpec([rootfs], ["true"], upper_dir=tmp_path)
    with pytest.raises(InvalidError, match="absolute"):
        SandboxSpec([rootfs], ["true"], binds=[BindMount(tmp_path, "data", True)])
    with pytest.raises(InvalidError, match="overlayfs options"):
        SandboxSpec([tmp_path / "a,b"], ["true"])
    with pytest.raises(InvalidError, match="command"):
        SandboxSpec([rootfs], [])
    with pytest.raises(InvalidError, match="list of arguments"):
        SandboxSpec([rootfs], "python3 -V")
    with pytest.raises(InvalidError, match="not found"):
        launch(SandboxSpec([tmp_path / "missing"], ["true"]))


def test_bwrap_argv(rootfs: Path, tmp_path: Path) -> None:
    binds = [BindMount(tmp_path, "/a/b", False), BindMount(tmp_path, "/a", True)]
    spec = SandboxSpec([rootfs], ["python3"], binds=binds)
    argv = build_bwrap_argv(spec)
    for flag in ("--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent",
                 "--new-session", "--clearenv"):
        assert flag in argv
    assert argv[argv.index("--proc") + 1] == "/proc" and argv[argv.index("--tmpfs") + 1] == "/tmp"
    assert argv.index("/a") < argv.index("/a/b")  # parents are bound first
    assert "--unshare-net" in argv and "/etc/resolv.conf" not in argv  # network="none"
    host = build_bwrap_argv(SandboxSpec([rootfs], ["python3"], network="host"))
    assert "--unshare-net" not in host and "/etc/resolv.conf" in host
    pasta = build_bwrap_argv(SandboxSpec([rootfs], ["python3"], network="pasta"), resolv_fd=7)
    assert "--unshare-net" not in pasta  # the launcher's `unshare --net` made it
    assert pasta[pasta.index("--ro-bind-data") + 1:][:2] == ["7", "/etc/resolv.conf"]
    with pytest.raises(InvalidError, match="network"):
        SandboxSpec([rootfs], ["python3"], network="bridge")  # type: ignore[arg-type]
    assert argv[-2:] == ["--", "python3"]


def test_launches_one_after_another_each_report_their_exit_code(rootfs: Path) -> None:
    """(How fast a launch is belongs to bench/: bench/cold_start.py and bench/sandboxes.py.)"""
    for code in (0, 3, 0, 7, 0):
        spec = SandboxSpec([rootfs], ["python3", "-c", f"raise SystemExit({code})"])
        assert launch(spec).wait() == code


def test_interrupted_build_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "rootfs"

    def interrupt(line: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_base_rootfs("bookworm", dest, log=interrupt)
    assert list(tmp_path.iterdir()) == []
    procs = [p for p in Path("/proc").iterdir() if p.name.isdigit()]
    assert [p for p in procs if str(tmp_path) in _cmdline(p)] == []  # mmdebstrap was killed


def test_build_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidError, match="already exists"):
        build_base_rootfs("bookworm", tmp_path)
    with pytest.raises(InvalidError, match="suite"):
        build_base_rootfs("Bookworm!", tmp_path / "x")
    with pytest.raises(InvalidError, match="package"):
        build_base_rootfs("bookworm", tmp_path / "x", include=["bad name"])
    assert not (tmp_path / "x").exists()


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def test_environment_values_stay_out_of_the_host_process_list(rootfs: Path) -> None:
    spec = python(rootfs, "import os, time; print(os.environ['TOKEN'], flush=True); time.sleep(5)",
                  env={**DEFAULT_ENV, "TOKEN": "s3cr3t-value"})
    process = launch(spec, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == b"s3cr3t-value"
        pids = [process.pid]
        for pid in pids:  # the launcher and every process below it
            pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        for pid in pids:
            assert b"s3cr3t-value" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    finally:
        process.kill()
        process.wait()


# -- user namespace ---------------------------------------------------------------------------

def test_root_inside_is_an_unprivileged_host_id(rootfs: Path, tmp_path: Path) -> None:
    """uid 0 inside is SANDBOX_IDS.base on the host; host root is unmapped inside; what root
    writes in a bound directory or the upper layer is owned by that id, never by host root."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chown(shared, SANDBOX_IDS.base, SANDBOX_IDS.base)
    host_file = tmp_path / "host-root-file"
    host_file.write_text("host root's")
    code = (
        "import os\n"
        "print(os.getuid(), os.getgid(), open('/proc/self/uid_map').read().split())\n"
        "open('/shared/made', 'w').write('x'); open('/etc/made', 'w').write('y')\n"
        "print(os.stat('/usr/bin/python3').st_uid, os.stat('/host').st_uid)\n"
        "try:\n    open('/host', 'a')\nexcept PermissionError:\n    print('denied')\n"
    )
    binds = [BindMount(shared, "/shared", False), BindMount(host_file, "/host", False)]
    result = run(python(rootfs, code, binds=binds, upper_dir=tmp_path / "upper", work_dir=tmp_path / "work"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"0 0 ['0', '{SANDBOX_IDS.base}', '{SANDBOX_IDS.count}']"
    assert lines[1:] == ["0 65534", "denied"]  # the image is root's inside; host root is nobody
    for made in (shared / "made", tmp_path / "upper/etc/made"):
        info = made.stat()
        assert (info.st_uid, info.st_gid) == (SANDBOX_IDS.base, SANDBOX_IDS.base)
    assert (tmp_path / "upper").stat().st_uid == SANDBOX_IDS.base
    assert host_file.read_text() == "host root's"


def test_no_host_descriptor_reaches_the_command(rootfs: Path) -> None:
    code = "import os; print(sorted(int(fd) for fd in os.listdir('/proc/self/fd')))"
    for network in ("none", "pasta", "host"):
        result = run(python(rootfs, code, env={**DEFAULT_ENV, "SECRET": "x"}, network=network))
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "[0, 1, 2, 3]", network  # 3: listdir's own


def test_private_host_paths_are_bound(rootfs: Path, tmp_path: Path) -> None:
    """Binds below directories only host root may enter (0700) still work: the launcher
    stages them before the sandbox drops host root."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "inside").mkdir()
    (private / "inside" / "data.txt").write_text("reachable")
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700
    result = run(python(rootfs, "print(open('/data/data.txt').read())",
                        binds=[BindMount(private / "inside", "/data", True)]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "reachable"


def test_shift_tree_moves_owners_into_the_range_once(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "setuid").write_text("")
    os.chmod(tree / "sub" / "setuid", 0o4755)
    (tree / "link").symlink_to("/etc/passwd")
    os.lchown(tree / "sub", 1000, 100)
    shift_tree(tree)
    base = SANDBOX_IDS.base
    assert (tree / "sub").stat().st_uid == base + 1000 and (tree / "sub").stat().st_gid == base + 100
    assert (tree / "sub" / "setuid").stat().st_mode & 0o7777 == 0o4755  # chown cleared it; restored
    assert os.lstat(tree / "link").st_uid == base and Path("/etc/passwd").stat().st_uid == 0
    assert tree.stat().st_uid == base
    assert not ensure_shifted(tree)  # done: a second pass changes nothing
    shift_tree(tree)
    assert (tree / "sub").stat().st_uid == base + 1000


# -- network -----------------------------------------------------------------------------------

@pytest.fixture
def host_loopback_server() -> Iterator[int]:
    """A TCP server on the host's 127.0.0.1 (what a sandbox must never reach)."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server.getsockname()[1]
    server.close()


def test_pasta_network_reaches_out_not_the_host_loopback(rootfs: Path, host_loopback_server: int) -> None:
    assert pasta_unavailable_reason() is None
    code = (
        "import socket\n"
        "print(sorted(name for _, name in socket.if_nameindex()))\n"
        f"for host in ('127.0.0.1', 'localhost'):\n"
        "    try:\n"
        f"        socket.create_connection((host, {host_loopback_server}), timeout=3); print('reached')\n"
        "    except OSError as e:\n"
        "        print(type(e).__name__)\n"
        "print(len(socket.getaddrinfo('deb.debian.org', 80)) > 0)\n"
        "print(open('/etc/resolv.conf').read().split())\n"
    )
    result = run(python(rootfs, code, network="pasta"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("['") and "'lo'" in lines[0] and len(eval(lines[0])) == 2
    assert lines[1:3] == ["ConnectionRefusedError", "ConnectionRefusedError"]  # its own loopback
    assert lines[3] == "True"  # DNS works
    assert eval(lines[4]) == resolv_conf()[0].split()


@pytest.mark.parametrize("on_loop", [False, True])
def test_a_setup_failure_is_reported_by_bwrap_not_hidden_by_pasta(rootfs: Path, tmp_path: Path, on_loop: bool,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A sandbox whose command starts while pasta connects its network (`network_ready_env`)
    fails to mount (a file bound over a directory) before pasta has connected (held back here):
    the launch reports the sandbox's own exit and bwrap's message, not pasta's failure to find
    the network namespace that went with it."""
    from ferry.server.runtimes.sandbox import bwrap

    start, start_async = bwrap.PastaNetwork.start, bwrap.PastaNetwork.start_async

    def late(pid: int, forward_dns: bool) -> Any:
        time.sleep(1.0)
        return start(pid, forward_dns)

    async def late_async(pid: int, forward_dns: bool) -> Any:
        await asyncio.sleep(1.0)
        return await start_async(pid, forward_dns)

    monkeypatch.setattr(bwrap.PastaNetwork, "start", staticmethod(late))
    monkeypatch.setattr(bwrap.PastaNetwork, "start_async", staticmethod(late_async))
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("x")
    spec = python(rootfs, "print('never')", network="pasta", network_ready_env="NETWORK_READY_FD",
                  binds=[BindMount(not_a_directory, "/usr")])

    async def on_the_loop() -> tuple[int, bytes]:
        process = await launch_async(spec, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, err = await process.communicate()
        return process.returncode or 0, err

    code, err = asyncio.run(on_the_loop()) if on_loop else (lambda r: (r.returncode, r.stderr.encode()))(run(spec))
    assert code != 0
    assert b"bwrap: Can't create file at /usr" in err and b"pasta" not in err, err


def test_pasta_ends_with_its_sandbox(rootfs: Path) -> None:
    process = launch(python(rootfs, "import time; print('up', flush=True); time.sleep(60)", network="pasta"),
                     stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"up\n"
    pid_file = PID_DIR / f"{process.pid}.pid"
    pasta = int(pid_file.read_text())
    assert Path(f"/proc/{pasta}/comm").read_text().startswith(("pasta", "passt"))  # passt.avx2
    assert os.stat(f"/proc/{pasta}").st_uid == SANDBOX_IDS.base  # never host root
    process.kill()
    process.wait()
    deadline = time.monotonic() + 60  # (waits for the event; the bound only guards a hang)
    while Path(f"/proc/{pasta}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pasta}").exists() and not pid_file.exists()


def test_resolv_conf_drops_loopback_nameservers(tmp_path: Path) -> None:
    host = tmp_path / "resolv.conf"
    host.write_text("# comment\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch example.org\n")
    assert resolv_conf(host) == ("nameserver 10.0.0.2\nsearch example.org\n", False)
    host.write_text("nameserver 127.0.0.53\noptions edns0\n")
    text, forward = resolv_conf(host)
    assert forward and text.splitlines() == ["nameserver 169.254.0.53", "options edns0"]


def test_a_restarted_server_ends_the_pastas_left_behind(rootfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ferry.server.runtimes.sandbox.network import PastaNetwork, end_leftover_pastas

    monkeypatch.setattr(PastaNetwork, "close", lambda self: None)  # as if its server had crashed
    process = launch(python(rootfs, "import time; print('up', flush=True); time.sleep(60)", network="pasta"),
                     stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"up\n"
    pasta = int((PID_DIR / f"{process.pid}.pid").read_text())
    end_leftover_pastas()  # its sandbox still runs: kept
    assert Path(f"/proc/{pasta}").exists()
    process.kill()
    process.wait()
    time.sleep(0.2)
    assert Path(f"/proc/{pasta}").exists()  # nobody ended it
    end_leftover_pastas()
    deadline = time.monotonic() + 60  # (waits for the event; the bound only guards a hang)
    while Path(f"/proc/{pasta}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pasta}").exists()
    assert not (PID_DIR / f"{process.pid}.pid").exists()


def test_the_command_may_start_while_pasta_connects(rootfs: Path) -> None:
    """With network_ready_env the command starts at once and waits on that descriptor for
    its network (one byte), which it then closes; no other descriptor reaches it."""
    code = (
        "import os, socket\n"
        "fd = int(os.environ.pop('READY'))\n"
        "print(os.read(fd, 1)); os.close(fd)\n"
        "print(len(socket.if_nameindex()), sorted(int(f) for f in os.listdir('/proc/self/fd')))\n"
    )
    result = run(python(rootfs, code, network="pasta", network_ready_env="READY"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["b'n'", "2 [0, 1, 2, 3]"]
    with pytest.raises(InvalidError, match="network_ready_env"):
        python(rootfs, code, network="none", network_ready_env="READY")


def test_launch_async_with_pasta_on_uvloop(rootfs: Path) -> None:
    """The server's loop is uvloop: the namespaces are set up on it, without worker threads."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> tuple[bytes, int]:
        code = "import socket; print(len(socket.if_nameindex()))"
        process = await launch_async(python(rootfs, code, network="pasta"), stdout=asyncio.subprocess.PIPE)
        out, _ = await process.communicate()
        return out, await process.wait()

    assert uvloop.run(main()) == (b"2\n", 0)
