"""The `process` runtime: each container is a plain OS subprocess of the server's Python."""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import signal
import sys
from typing import Any, Callable

from ... import _config
from ...exception import InvalidError
from .base import ContainerHandle, ContainerSpec, ExitStatus, OutputSink, Runtime, inherited_environment
from ..volume_mounts import prepare_process
from .cgroups import Cgroup, CgroupLimits, cgroups_unavailable_reason
from . import snapshots
from .snapshots import SnapshotTemplates
from .zygote import Zygote, ZygoteError, ZygotePool

log = logging.getLogger("ferry.server")


class ProcessHandle(ContainerHandle):
    """A container process in its own process group, with its cgroup (if limited) and a
    clean-up of what it leaves on the host, run off the event loop once it has ended."""

    def __init__(self, process: Any, readers: list[asyncio.Task], cgroup: Cgroup | None,
                 memory_mb: int | None, cleanup: Callable[[], None] | None = None) -> None:
        self._process = process
        self._readers = readers
        self._cgroup = cgroup
        self._memory_mb = memory_mb
        self._cleanup = cleanup

    async def wait(self) -> ExitStatus:
        code = await self._process.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)
        oom = False
        if self._cgroup is not None:
            oom = self._cgroup.oom_killed()
            self._cgroup.destroy()
        if self._cleanup is not None:
            await asyncio.to_thread(self._cleanup)
        return ExitStatus(code=code, oom_killed=oom, memory_mb=self._memory_mb)

    def _signal(self, sig: int) -> None:
        if self._process.returncode is not None:
            return
        try:
            os.killpg(self._process.pid, sig)
        except ProcessLookupError:
            pass

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)


async def _pump(stream: asyncio.StreamReader, name: str, on_output: OutputSink) -> None:
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return
        on_output(name, chunk.decode("utf-8", errors="replace"))


class ForkedProcess:
    """A container forked by a zygote: the parts of asyncio's Process that ProcessHandle uses."""

    def __init__(self, pid: int, exited: asyncio.Future) -> None:
        self.pid = pid
        self._exited = exited

    @property
    def returncode(self) -> int | None:
        if not self._exited.done():
            return None
        code = self._exited.result()
        return -signal.SIGKILL if code is None else code  # None: killed when its zygote died

    async def wait(self) -> int | None:
        return await asyncio.shield(self._exited)


async def _pipe_reader(fd: int) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), open(fd, "rb", buffering=0))
    return reader


class ProcessRuntime(Runtime):
    """Containers as subprocesses in their own session, sharing the host's filesystem, network
    and user ids (see docs/security.md, "What each runtime isolates").

    With FERRY_ZYGOTE (the default) a container is forked from a zygote of its interpreter
    that has already imported Ferry (see zygote.py); else, or until that zygote is ready,
    it starts as `python -m ferry._container`."""

    name = "process"

    def __init__(self) -> None:
        self._zygotes = ZygotePool() if _config.get("zygote") else None
        self._snapshots = SnapshotTemplates(_config.home() / "snapshots") if _config.get("zygote") else None

    async def close(self) -> None:
        if self._zygotes is not None:
            await self._zygotes.close()
        if self._snapshots is not None:
            await self._snapshots.close()

    def snapshots_unavailable(self) -> str | None:
        if self._snapshots is None:
            return "FERRY_ZYGOTE=0 turns off the template processes memory snapshots are forked from"
        return None

    def check(self, spec: ContainerSpec) -> None:
        if spec.memory_mb is not None or spec.cpu is not None:
            reason = cgroups_unavailable_reason()
            if reason is not None:
                raise InvalidError(f"This server cannot enforce cpu=/memory= limits: {reason}")
        if spec.block_network:
            raise InvalidError(
                "block_network=True needs the sandbox runtime: the process runtime runs containers "
                "as plain processes in the host's network namespace, so it cannot take their network "
                "away. Run the server with FERRY_RUNTIME=sandbox (root, bubblewrap, passt), or remove "
                "block_network=True."
            )

    async def start(self, spec: ContainerSpec, on_output: OutputSink) -> ContainerHandle:
        self.check(spec)
        env = inherited_environment()
        image = spec.image
        if image is not None:  # its venv (or the server's Python), env and python sources
            env.update(image.env)
            paths = [*image.pythonpath, *(str(m.host_dir) for m in image.mounts if m.kind == "python")]
            if paths:
                env["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [env.get("PYTHONPATH")])])
        env.update(spec.env)
        env.pop("CUDA_VISIBLE_DEVICES", None)  # only the devices placed on this container
        env.update(spec.gpu_env())
        env.update(
            {
                "FERRY_SERVER_URL": spec.server_url,
                "FERRY_CONTAINER_ID": spec.container_id,
                "FERRY_FUNCTION_ID": spec.function_id,
                "PYTHONUNBUFFERED": "1",
            }
        )
        python = image.python if image is not None else sys.executable
        cwd = image.workdir if image is not None else None
        volumes = prepare_process(spec.volumes, spec.container_id) if spec.volumes else None
        if volumes is not None:  # bound in a private mount namespace: no zygote (server/volume_mounts.py)
            env.update(volumes.env)
        cgroup = None
        if spec.memory_mb is not None or spec.cpu is not None:
            cgroup = Cgroup.create(spec.container_id, CgroupLimits(memory_mb=spec.memory_mb, cpu=spec.cpu))
        forked = None  # (volumes are bound in a mount namespace of the container's own: no zygote)
        if spec.snapshot is not None and self._snapshots is not None:  # enable_memory_snapshot=True
            template, reason = await self._snapshots.template_for(spec, python, env, cwd, volumes is not None)
            if reason:
                on_output("stderr", snapshots.notice(reason))
            if template is not None:
                forked = await self._spawn(template, env, cwd, cgroup, spec.memory_mb, on_output, spec.entry_module)
        elif volumes is None:
            forked = await self._fork(python, env, cwd, cgroup, spec.memory_mb, on_output, spec.entry_module)
        if forked is not None:
            return forked
        argv = [python, "-m", spec.entry_module]
        if volumes is not None:
            argv = volumes.process_argv(argv)
        if cgroup is not None:
            # join the cgroup before anything of the container runs, then become it
            joins = " && ".join(f"echo $$ > {shlex.quote(str(p))}" for p in cgroup.procs_files)
            argv = ["/bin/sh", "-c", f'{joins} && exec "$0" "$@"', *argv]
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            if cgroup is not None:
                cgroup.destroy()
            if volumes is not None:
                volumes.remove()
            raise InvalidError(f"Could not start a container process: {exc}") from None
        assert process.stdout is not None and process.stderr is not None
        readers = [
            asyncio.create_task(_pump(process.stdout, "stdout", on_output)),
            asyncio.create_task(_pump(process.stderr, "stderr", on_output)),
        ]
        # the views of its volumes go when it ends (their commits are on the server)
        return ProcessHandle(process, readers, cgroup, spec.memory_mb, volumes.remove if volumes else None)

    async def _fork(self, python: str, env: dict[str, str], cwd: str | None, cgroup: Cgroup | None,
                    memory_mb: int | None, on_output: OutputSink, module: str) -> ProcessHandle | None:
        """Fork the container from the zygote of its interpreter, if one is ready."""
        zygote = self._zygotes.ready_for(python, env) if self._zygotes is not None else None
        if zygote is None:
            return None
        return await self._spawn(zygote, env, cwd, cgroup, memory_mb, on_output, module)

    async def _spawn(self, zygote: Zygote, env: dict[str, str], cwd: str | None, cgroup: Cgroup | None,
                     memory_mb: int | None, on_output: OutputSink, module: str) -> ProcessHandle | None:
        """Fork the container from `zygote` (or a snapshot's template); None if it cannot."""
        try:
            pid, exited, out_fd, err_fd = await zygote.spawn(env, cwd, list(cgroup.procs_files) if cgroup else [],
                                                             module)
        except ZygoteError as exc:
            log.warning("starting a container without its zygote: %s", exc)
            return None
        readers = [asyncio.create_task(_pump(await _pipe_reader(fd), name, on_output))
                   for fd, name in ((out_fd, "stdout"), (err_fd, "stderr"))]
        return ProcessHandle(ForkedProcess(pid, exited), readers, cgroup, memory_mb)
