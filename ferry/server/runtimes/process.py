"""The `process` runtime: each container is a plain OS subprocess of the server's Python."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from ...exception import InvalidError
from .base import ContainerHandle, ContainerSpec, ExitStatus, OutputSink, Runtime


class ProcessHandle(ContainerHandle):
    def __init__(self, process: asyncio.subprocess.Process, readers: list[asyncio.Task]) -> None:
        self._process = process
        self._readers = readers

    async def wait(self) -> ExitStatus:
        code = await self._process.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)
        return ExitStatus(code=code)

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
        if spec.memory_mb is not None:
            raise NotImplementedError(
                "memory= limits are enforced by the sandbox runtime (cgroups), which is not "
                "built yet; remove memory= for now."
            )
        if spec.cpu is not None:
            raise NotImplementedError(
                "cpu= limits are enforced by the sandbox runtime (cgroups), which is not built "
                "yet; remove cpu= for now."
            )

    async def start(self, spec: ContainerSpec, on_output: OutputSink) -> ContainerHandle:
        self.check(spec)
        env = dict(os.environ)
        env.update(spec.env)
        env.update(
            {
                "FERRY_SERVER_URL": spec.server_url,
                "FERRY_CONTAINER_ID": spec.container_id,
                "FERRY_FUNCTION_ID": spec.function_id,
                "PYTHONUNBUFFERED": "1",
            }
        )
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ferry._container",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            raise InvalidError(f"Could not start a container process: {exc}") from None
        assert process.stdout is not None and process.stderr is not None
        readers = [
            asyncio.create_task(_pump(process.stdout, "stdout", on_output)),
            asyncio.create_task(_pump(process.stderr, "stderr", on_output)),
        ]
        return ProcessHandle(process, readers)

