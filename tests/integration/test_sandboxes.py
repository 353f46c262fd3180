"""ferry.Sandbox against real servers and real containers: create and exec on the process
runtime and the sandbox runtime, streamed output, stdin, return codes, terminate, timeout,
secrets, volumes, workdir, block_network, from_id / list / tags, sandboxes created inside a
function, what containers and administrators may not send, `ferry sandbox`, App.lookup."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

import ferry
from ferry._client import Client
from ferry.exception import (
    ExecutionError, InvalidError, NotFoundError, PermissionDeniedError, SandboxTerminatedError, SandboxTimeoutError,
)

from ..conftest import ServerProcess, run_cli
from .apps.sandbox_api_apps import app as function_app, refusals, run_in_sandbox

SANDBOX_IMAGE = ferry.Image.debian_slim(python_version="3.11")  # the image the sandbox runtime's tests share

# prints a line, then blocks until FLAG exists, then prints another: the first line can only
# be read before the command ends if output streams while it runs
WAIT_FOR_FLAG = 'echo first; while [ ! -e "$FLAG" ]; do sleep 0.02; done; echo second'


# the network interfaces a process sees
INTERFACES = "print(*sorted(line.split(':')[0].strip() for line in open('/proc/net/dev').readlines()[2:]))"


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def app(server: ServerProcess) -> ferry.App:
    return ferry.App.lookup("test-sandboxes", create_if_missing=True)


def _streams_before_the_end(sb: ferry.Sandbox, flag: str) -> None:
    p = sb.exec("sh", "-c", WAIT_FOR_FLAG, env={"FLAG": flag})
    lines = iter(p.stdout)
    assert next(lines) == "first\n"
    assert p.poll() is None  # it cannot have ended: the flag does not exist yet
    assert sb.exec("touch", flag).wait() == 0
    assert next(lines) == "second\n"
    assert list(lines) == []
    assert p.wait() == 0 and p.returncode == 0


# -- the process runtime --------------------------------------------------------------------
def test_exec_reads_output_and_exit_codes(app: ferry.App) -> None:
    sb = ferry.Sandbox.create(app=app)
    try:
        assert sb.object_id.startswith("sb-") and sb.returncode is None and sb.poll() is None
        p = sb.exec("sh", "-c", "echo out; echo err >&2; exit 3")
        assert p.stdout.read() == "out\n" and p.stderr.read() == "err\n"
        assert p.wait() == 3 and p.returncode == 3 and p.poll() == 3
        binary = sb.exec("printf", "\\001\\002", text=False)
        assert binary.stdout.read() == b"\x01\x02"
        with pytest.raises(ExecutionError, match="no-such-program"):
            sb.exec("no-such-program")
    finally:
        sb.terminate()


def test_exec_output_streams_before_the_command_ends(app: ferry.App, tmp_path: Path) -> None:
    sb = ferry.Sandbox.create(app=app)
    try:
        _streams_before_the_end(sb, str(tmp_path / "flag"))
    finally:
        sb.terminate()


def test_python_in_commands_is_the_images(app: ferry.App) -> None:
    sb = ferry.Sandbox.create(app=app, image=ferry.Image.debian_slim().pip_install("six"))
    try:
        p = sb.exec("python", "-c", "import six, sys; print(sys.prefix != sys.base_prefix or 'image')")
        assert p.stdout.read() == "True\n" and p.wait() == 0, p.stderr.read()
    finally:
        sb.terminate()


def test_stdin_round_trip(app: ferry.App) -> None:
    sb = ferry.Sandbox.create(app=app)
    try:
        p = sb.exec("python3", "-c", "import sys\nfor line in sys.stdin: print(line.strip().upper(), flush=True)")
        lines = iter(p.stdout)
        p.stdin.write("hello\n")
        p.stdin.drain()
        assert next(lines) == "HELLO\n"  # answered while stdin is still open
        p.stdin.write(b"again\n")
        p.stdin.write_eof()
        p.stdin.drain()
        assert next(lines) == "AGAIN\n"
        assert p.wait() == 0
    finally:
        sb.terminate()


def test_entrypoint_output_and_returncode(app: ferry.App) -> None:
    sb = ferry.Sandbox.create("sh", "-c", "echo main; echo oops >&2; exit 5", app=app)
    sb.wait()
    assert sb.returncode == 5 and sb.poll() == 5
    assert sb.stdout.read() == "main\n" and sb.stderr.read() == "oops\n"
    again = ferry.Sandbox.from_id(sb.object_id)  # the output is kept for later readers
    assert again.stdout.read() == "main\n" and again.returncode == 5


def test_terminate_and_wait(app: ferry.App) -> None:
    sb = ferry.Sandbox.create("sleep", "1000", app=app)
    p = sb.exec("sleep", "1000")
    sb.terminate()
    with pytest.raises(SandboxTerminatedError):
        sb.wait()
    assert sb.returncode == 137
    sb.wait(raise_on_termination=False)
    assert p.wait() == -9  # its processes end with it (killed)
    with pytest.raises(ExecutionError, match="has ended"):
        sb.exec("true")
    assert ferry.Sandbox.create(app=app).terminate(wait=True) == 137


def test_timeout_is_enforced(app: ferry.App) -> None:
    sb = ferry.Sandbox.create("sleep", "1000", app=app, timeout=1)
    with pytest.raises(SandboxTimeoutError):
        sb.wait()
    assert sb.returncode == 124
    with pytest.raises(InvalidError, match="between 1 and 86400"):
        ferry.Sandbox.create(app=app, timeout=86401)


def test_secrets_env_workdir_and_volumes(app: ferry.App, tmp_path: Path) -> None:
    volume = ferry.Volume.from_name(_unique("sandbox-vol"), create_if_missing=True)
    with volume.batch_upload() as batch:
        batch.put_file(__file__, "/given.py")
    workdir = str(tmp_path / "work")
    sb = ferry.Sandbox.create(app=app, secrets=[ferry.Secret.from_dict({"TOKEN": "s3cret"})], env={"GREETING": "hi"},
                              workdir=workdir, volumes={"/mnt/vol": volume})
    p = sb.exec("sh", "-c", "echo $TOKEN $GREETING; pwd; test -f /mnt/vol/given.py && echo given; "
                            "echo written > /mnt/vol/from-sandbox.txt")
    assert p.stdout.read().split("\n")[:3] == ["s3cret hi", workdir, "given"]
    assert p.wait() == 0
    assert sb.exec("pwd", workdir="/").stdout.read() == "/\n"
    sb.terminate(wait=True)  # volumes are committed when a sandbox ends
    assert b"".join(volume.read_file("/from-sandbox.txt")) == b"written\n"


def test_block_network_needs_the_sandbox_runtime(app: ferry.App) -> None:
    with pytest.raises(InvalidError, match="block_network=True needs the sandbox runtime"):
        ferry.Sandbox.create(app=app, block_network=True)


def test_from_id_list_and_tags(app: ferry.App) -> None:
    tag = _unique("t")
    sb = ferry.Sandbox.create(app=app, tags={"test": tag})
    try:
        assert sb.get_tags() == {"test": tag}
        assert [s.object_id for s in ferry.Sandbox.list(tags={"test": tag})] == [sb.object_id]
        assert sb.object_id in [s.object_id for s in ferry.Sandbox.list(app_id=app.app_id)]
        sb.set_tags({"test": tag, "more": "yes"})
        assert [s.object_id for s in ferry.Sandbox.list(tags={"more": "yes", "test": tag})] == [sb.object_id]
        assert list(ferry.Sandbox.list(tags={"test": "other"})) == []
        same = ferry.Sandbox.from_id(sb.object_id)
        assert same.exec("echo", "same").stdout.read() == "same\n"
    finally:
        sb.terminate(wait=True)
    assert list(ferry.Sandbox.list(tags={"test": tag})) == []  # ended ones are not listed
    with pytest.raises(NotFoundError):
        ferry.Sandbox.from_id("sb-0000000000000000")


def test_create_needs_a_running_app(server: ServerProcess) -> None:
    with pytest.raises(InvalidError, match="needs app="):
        ferry.Sandbox.create()
    with pytest.raises(InvalidError, match="is not running"):
        ferry.Sandbox.create(app=ferry.App("never-run"))
    with pytest.raises(NotImplementedError, match="encrypted_ports"):
        ferry.Sandbox.create(app=ferry.App.lookup("test-sandboxes", create_if_missing=True), encrypted_ports=[8000])


def test_app_lookup(server: ServerProcess) -> None:
    name = _unique("looked-up")
    with pytest.raises(NotFoundError, match="create_if_missing=True"):
        ferry.App.lookup(name)
    created = ferry.App.lookup(name, create_if_missing=True)
    assert created.app_id.startswith("ap-") and created.name == name
    assert ferry.App.lookup(name).app_id == created.app_id
    assert name in run_cli(["app", "list"], server).stdout


def test_sandboxes_created_inside_a_function_and_what_containers_may_not_do(app: ferry.App) -> None:
    other = ferry.Sandbox.create(app=app)
    try:
        with function_app.run(show_logs=False):
            result = run_in_sandbox.remote("from inside")
            assert result["out"] == "from inside\n" and result["code"] == 0 and result["listed"]
            refused = refusals.remote(other.object_id, app.app_id)
    finally:
        other.terminate()
    assert "another app" in refused["exec"] and "another app" in refused["terminate"]
    assert "own app" in refused["list"] and "own app" in refused["create"]
    assert "cannot create an app from inside a container" in refused["lookup_create"]
    assert "supervisor" in refused["attach"] and "supervisor" in refused["io"]
    assert "not permitted from inside a container" in refused["app_list"]


def test_administrators_may_not_send_the_supervisors_requests(app: ferry.App) -> None:
    client = Client.from_env_sync()
    for method, args in (("sandbox.attach", {}), ("sandbox.io", {"exec_id": "ex-x", "fd": 1, "data": b"x"}),
                         ("sandbox.exited", {"exec_id": "ex-x", "code": 0}), ("sandbox.started", {"exec_id": "ex-x"})):
        with pytest.raises(PermissionDeniedError, match=f"{method} is not permitted"):
            client.request_sync(method, **args)


def test_cli_lists_and_stops_sandboxes(server: ServerProcess, app: ferry.App) -> None:
    tag = _unique("cli")
    sb = ferry.Sandbox.create("sleep", "1000", app=app, tags={"cli": tag})
    listed = run_cli(["sandbox", "list", "--json"], server)
    assert listed.returncode == 0, listed.stderr
    rows = {row["id"]: row for row in json.loads(listed.stdout)}
    assert rows[sb.object_id]["tags"] == {"cli": tag} and rows[sb.object_id]["state"] == "running"
    assert rows[sb.object_id]["app_name"] == "test-sandboxes"
    table = run_cli(["sandbox", "list"], server)
    assert sb.object_id in table.stdout and f"cli={tag}" in table.stdout
    stopped = run_cli(["sandbox", "stop", sb.object_id], server)
    assert stopped.returncode == 0 and "terminated" in stopped.stdout, stopped.stderr
    assert sb.poll() == 137


# -- the sandbox runtime ----------------------------------------------------------------------
@pytest.fixture
def sandbox_app(on_sandbox: ServerProcess) -> ferry.App:
    return ferry.App.lookup("test-sandboxes", create_if_missing=True)


def test_on_the_sandbox_runtime(sandbox_app: ferry.App) -> None:
    sb = ferry.Sandbox.create(app=sandbox_app, image=SANDBOX_IMAGE, workdir="/work",
                              secrets=[ferry.Secret.from_dict({"TOKEN": "inside"})])
    try:
        p = sb.exec("sh", "-c", "echo $TOKEN; pwd; cat /proc/1/cmdline | tr '\\0' ' '")
        out = p.stdout.read().split("\n")
        assert out[:2] == ["inside", "/work"] and "ferry._container.sandbox" in out[2]  # its own PID namespace
        assert p.wait() == 0
        _streams_before_the_end(sb, "/tmp/flag")
        cat = sb.exec("cat")
        cat.stdin.write("round trip")
        cat.stdin.write_eof()
        cat.stdin.drain()
        assert cat.stdout.read() == "round trip" and cat.wait() == 0
    finally:
        sb.terminate()
    with pytest.raises(SandboxTerminatedError):
        sb.wait()


def test_block_network_on_the_sandbox_runtime(sandbox_app: ferry.App) -> None:
    blocked = ferry.Sandbox.create(app=sandbox_app, image=SANDBOX_IMAGE, block_network=True)
    connected = ferry.Sandbox.create(app=sandbox_app, image=SANDBOX_IMAGE)
    try:
        assert blocked.exec("python3", "-c", INTERFACES).stdout.read().split() == ["lo"]
        assert len(connected.exec("python3", "-c", INTERFACES).stdout.read().split()) > 1
    finally:
        blocked.terminate()
        connected.terminate()


# -- more of the API ------------------------------------------------------------------------------
def test_async_forms_stream_types_exec_timeout_and_pty(app: ferry.App) -> None:
    import asyncio

    from ferry.stream_type import StreamType

    async def scenario() -> tuple:
        sb = await ferry.Sandbox.create.aio(app=app)
        p = await sb.exec.aio("sh", "-c", "echo a; echo b")
        lines = [line async for line in p.stdout]
        code = await p.wait.aio()
        await sb.terminate.aio()
        return lines, code

    assert asyncio.run(scenario()) == (["a\n", "b\n"], 0)
    sb = ferry.Sandbox.create(app=app)
    try:
        quiet = sb.exec("sh", "-c", "echo out; echo err >&2", stdout=StreamType.DEVNULL)
        assert quiet.stdout.read() == "" and quiet.stderr.read() == "err\n" and quiet.wait() == 0
        assert sb.exec("sleep", "1000", timeout=1).wait() == -9  # killed at its timeout
        terminal = sb.exec("sh", "-c", "tty; stty size", pty=True)
        out = terminal.stdout.read()
        assert out.startswith("/dev/pts/") and terminal.wait() == 0
        with pytest.raises(InvalidError, match="absolute path"):
            sb.exec("true", workdir="relative")
    finally:
        sb.terminate()


def test_from_name_and_sandboxes_end_with_their_app(server: ServerProcess) -> None:
    running = ferry.App("test-sandboxes-ephemeral")
    with running.run(show_logs=False):
        sb = ferry.Sandbox.create("sleep", "1000", app=running, name="worker")
        assert ferry.Sandbox.from_name("test-sandboxes-ephemeral", "worker").object_id == sb.object_id
    with pytest.raises(SandboxTerminatedError, match="stopped"):
        sb.wait()


def test_the_example_runs(server: ServerProcess) -> None:
    done = run_cli(["run", "examples/sandboxes.py"], server)
    assert done.returncode == 0, done.stderr
    assert "sandbox says: step 0\nsandbox says: step 1\nsandbox says: step 2\nexit code: 0\n" in done.stdout


def test_gpus_are_placed_on_sandboxes_and_given_back(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A server whose inventory is declared (FERRY_GPUS, no GPU needed): a sandbox holds its
    device exclusively while it runs, and gives it back when it ends."""
    gpu_server = ServerProcess.start(tmp_path_factory.mktemp("sandbox-gpu-home"), extra_env={"FERRY_GPUS": "H100:1"})
    try:
        with gpu_server.used():
            target = ferry.App.lookup("test-sandboxes-gpu", create_if_missing=True)
            first = ferry.Sandbox.create(app=target, gpu="H100")
            shown = first.exec("sh", "-c", "echo $CUDA_VISIBLE_DEVICES $FERRY_GPU_TYPE").stdout.read()
            assert shown == "0 H100\n"
            with pytest.raises(ExecutionError, match="all in use"):
                ferry.Sandbox.create(app=target, gpu="H100")
            with pytest.raises(InvalidError, match="B200"):
                ferry.Sandbox.create(app=target, gpu="B200")  # no machine has one
            first.terminate(wait=True)
            second = ferry.Sandbox.create(app=target, gpu="H100")
            assert second.exec("sh", "-c", "echo $CUDA_VISIBLE_DEVICES").stdout.read() == "0\n"
            second.terminate()
    finally:
        gpu_server.stop()


def test_volumes_on_the_sandbox_runtime(sandbox_app: ferry.App) -> None:
    volume = ferry.Volume.from_name(_unique("sandbox-runtime-vol"), create_if_missing=True)
    with volume.batch_upload() as batch:
        batch.put_file(__file__, "/given.py")
    sb = ferry.Sandbox.create(app=sandbox_app, image=SANDBOX_IMAGE, volumes={"/data": volume})
    p = sb.exec("sh", "-c", "test -f /data/given.py && echo given; echo made > /data/made.txt")
    assert p.stdout.read() == "given\n" and p.wait() == 0
    assert sb.terminate(wait=True) == 137
    assert b"".join(volume.read_file("/made.txt")) == b"made\n"  # committed when it ended


def test_a_sandbox_that_cannot_start_says_why(app: ferry.App) -> None:
    sb = ferry.Sandbox.create(app=app, workdir="/proc/no-such-dir/work")  # the supervisor cannot make it
    with pytest.raises(ExecutionError, match="(?s)ended before.*last lines of its stderr.*no-such-dir"):
        sb.exec("true")
    sb.wait()
    assert sb.returncode == 1


def test_an_image_build_shows_its_progress(sandbox_server: ServerProcess) -> None:
    import subprocess
    import sys

    unique = _unique("u")
    script = ("import ferry\n"
              "app = ferry.App.lookup('test-sandboxes', create_if_missing=True)\n"
              "image = ferry.Image.debian_slim(python_version='3.11').run_commands("
              f"'echo {unique} > /unique')\n"
              "sb = ferry.Sandbox.create(app=app, image=image)\n"
              "print(sb.exec('cat', '/unique').stdout.read(), end='')\n"
              "sb.terminate()\n")
    done = subprocess.run([sys.executable, "-c", script], env=sandbox_server.env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout == f"{unique}\n", done.stderr
    assert "Building image" in done.stderr and f"echo {unique}" in done.stderr
