"""`ferry.container_process`, as `modal.container_process` has it: `ContainerProcess`, the
handle `Sandbox.exec()` returns. Sandboxes are not part of Ferry's SDK yet, so there is no
process to attach to: creating one raises NotImplementedError."""

from __future__ import annotations

from typing import Any


class ContainerProcess:
    """A process started in a Sandbox (not supported by Ferry yet)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            "modal.container_process.ContainerProcess (the result of Sandbox.exec()) is not supported "
            "by Ferry yet: Sandboxes are not built. Run commands in a function with subprocess instead.")


__all__ = ["ContainerProcess"]
