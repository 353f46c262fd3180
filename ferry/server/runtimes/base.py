"""What a container runtime must do: start a container process and report how it ended.

A runtime only starts processes; everything else (inputs, outputs, logs of Python code) flows
over the connection the container opens to the control plane. The runtime forwards the raw
stdout/stderr of the process (output of C code and subprocesses) to `on_output`.
"""

from __future__ import annotations

import abc
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from ..images.model import BuiltImage

OutputSink = Callable[[str, str], None]  # (stream name, text)

# settings of the server's environment that never reach a container: a client credential or
# profile the server's shell happened to hold would otherwise hand containers an
# administrator's power (docs/security.md), and the TLS files are the server's own
NEVER_PASSED = frozenset({
    "FERRY_TOKEN_ID", "FERRY_TOKEN_SECRET", "FERRY_PROFILE", "FERRY_CONFIG_PATH", "FERRY_TLS_FINGERPRINT",
    "FERRY_TLS_CA", "FERRY_TLS_CERT", "FERRY_TLS_KEY", "FERRY_CONTAINER_SECRET",
})


def inherited_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment as a container may inherit it (`NEVER_PASSED` left out)."""
    source = os.environ if environ is None else environ
    return {key: value for key, value in source.items() if key not in NEVER_PASSED}


@dataclass(frozen=True)
class ContainerSpec:
    """Everything a runtime needs to start one container.

    `image` is the built image (its layers or interpreter, env, workdir, and `add_local_*`
    mounts written on this host); `code_dir` the user's source mount written on this host.
    Both are filled by `ImageService.complete_spec`; None means the server's own Python.
    """

    container_id: str
    function_id: str
    server_url: str
    env: dict[str, str] = field(default_factory=dict, repr=False)  # holds secret values
    cpu: float | None = None
    memory_mb: int | None = None
    image: "BuiltImage | None" = None
    code_dir: Path | None = None
    gpu_type: str | None = None            # the GPUs placed on this container, if any
    gpu_indices: tuple[int, ...] = ()      # host device indices, exclusively this container's
                                           # (ray runtime: one slot per GPU; Ray picks the devices)
    volumes: tuple[dict[str, Any], ...] = ()  # {path, name, id, read_only} (server/volume_mounts.py)
    # the server's Unix socket: runtimes with a network namespace bind it into the container
    # and point FERRY_SERVER_URL at it instead of `server_url` (see server/server.py)
    control_socket: Path | None = None
    block_network: bool = False            # block_network=True: no network but the control plane
    # the module the container runs (`python -m`): a function's entrypoint, or a Sandbox's
    # supervisor (ferry/_container/sandbox.py)
    entry_module: str = "ferry._container"
    # enable_memory_snapshot=True: what the snapshot's template imports and prepares
    # ({definition: {module, qualname, kind}, params: base64 | None}; runtimes/snapshots.py)
    snapshot: dict[str, Any] | None = None

    def gpu_env(self) -> dict[str, str]:
        """What tells CUDA which devices this container owns (`gpu_environment`)."""
        return gpu_environment(self.gpu_indices, self.gpu_type)


def gpu_environment(indices: Sequence[int | str], gpu_type: str | None) -> dict[str, str]:
    """What tells CUDA which devices a container owns: `indices` are NVML's, in PCI bus order;
    CUDA numbers devices fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID. Empty without GPUs."""
    if not indices:
        return {}
    visible = ",".join(str(i) for i in indices)
    return {"CUDA_VISIBLE_DEVICES": visible, "NVIDIA_VISIBLE_DEVICES": visible,
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID", "FERRY_GPU_TYPE": gpu_type or ""}


@dataclass(frozen=True)
class ExitStatus:
    """How a container process ended."""

    code: int | None
    oom_killed: bool = False
    memory_mb: int | None = None
    # it went down with its machine (ray runtime: its node died): the platform's loss, so the
    # inputs it held run again elsewhere without counting against the function's retries
    node_lost: bool = False

    def describe(self) -> str:
        if self.node_lost:
            return "was lost with its node"
        if self.oom_killed:
            limit = f" of {self.memory_mb} MiB" if self.memory_mb else ""
            return f"was killed for exceeding its memory limit{limit}"
        if self.code is None:
            return "ended for an unknown reason"
        if self.code < 0:
            try:
                name = signal.Signals(-self.code).name
            except ValueError:
                name = f"signal {-self.code}"
            return f"was killed by {name}"
        return f"exited with code {self.code}"


class ContainerHandle(abc.ABC):
    """A running container process."""

    @abc.abstractmethod
    async def wait(self) -> ExitStatus:
        """Wait for the container to end and say how."""

    @abc.abstractmethod
    def terminate(self) -> None:
        """Ask the container to stop (SIGTERM); it runs its @exit hooks."""

    @abc.abstractmethod
    def kill(self) -> None:
        """Stop the container at once (SIGKILL)."""


class Runtime(abc.ABC):
    """A way to run containers: `process` (subprocesses), `sandbox` (namespaces), `ray` (a cluster)."""

    name: str

    async def open(self) -> None:
        """Prepare to run containers (the ray runtime connects to its cluster); called when the
        server starts, before any container."""

    def check_function(self, tag: str, definition: dict[str, Any]) -> None:
        """Raise (NotImplementedError, InvalidError) when this runtime cannot run a function of
        this definition at all; called at app start."""

    def unmeetable(self, cpu: float | None, memory_mb: int | None) -> str | None:
        """Why no machine of this runtime could ever hold a container asking for `cpu` and
        `memory_mb` (None when one could, or when the runtime cannot tell)."""
        return None

    def snapshots_unavailable(self) -> str | None:
        """Why containers of `enable_memory_snapshot=True` functions start the ordinary way on
        this runtime; None when it makes and uses memory snapshots."""
        return f"the {self.name} runtime does not make memory snapshots yet"

    @abc.abstractmethod
    def check(self, spec: ContainerSpec) -> None:
        """Raise InvalidError if this runtime cannot honour the spec (limits, GPUs...)."""

    @abc.abstractmethod
    async def start(self, spec: ContainerSpec, on_output: OutputSink) -> ContainerHandle:
        """Start a container that connects back to `spec.server_url`."""

    async def close(self) -> None:
        """Release what the runtime keeps between containers (called when the server stops,
        after its containers have ended)."""
