"""The `process` runtime: each container is a plain OS subprocess of the server's Python."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import sys

from ...exception import InvalidError
from .base import ContainerHandle, ContainerSpec, ExitStatus, OutputSink, Runtime
from .cgroups import Cgroup, CgroupLimits, cgroups_unavailable_reason


class ProcessHandle(ContainerHandle):
    def __init__(self, process: asyncio.subprocess.Process, readers: list[asyncio.Task],
                 cgroup: Cgroup | None, memory_mb: int | None) -> None:
        self._process = process
        self._readers = readers
        self._cgroup = cgroup
        self._memory_mb = memory_mb

    async def wait(self) -> ExitStatus:
        code = await self._process.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)
        oom = False
        if self._cgroup is not None:
            oom = self._cgroup.oom_killed()
            self._cgroup.destroy()
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


class ProcessRuntime(Runtime):
    """Containers as subprocesses in their own session, sharing the host's filesystem."""

    name = "process"

    def check(self, spec: ContainerSpec) -> None:
        if spec.memory_mb is not None or spec.cpu is not None:
            reason = cgroups_unavailable_reason()
            if reason is not None:
                raise InvalidError(f"This server cannot enforce cpu=/memory= limits: {reason}")

    async def start(self, spec: ContainerSpec, on_output: OutputSink) -> ContainerHandle:
        self.check(spec)
        env = dict(os.environ)
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
        argv = [image.python if image is not None else sys.executable, "-m", "ferry._container"]
        cgroup = None
        if spec.memory_mb is not None or spec.cpu is not None:
            cgroup = Cgroup.create(spec.container_id, CgroupLimits(memory_mb=spec.memory_mb, cpu=spec.cpu))
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
                cwd=image.workdir if image is not None else None,
                start_new_session=True,
            )
        except OSError as exc:
            if cgroup is not None:
                cgroup.destroy()
            raise InvalidError(f"Could not start a container process: {exc}") from None
        assert process.stdout is not None and process.stderr is not None
        readers = [
            asyncio.create_task(_pump(process.stdout, "stdout", on_output)),
            asyncio.create_task(_pump(process.stderr, "stderr", on_output)),
        ]
        return ProcessHandle(process, readers, cgroup, spec.memory_mb)

