"""`ferry.container_process`, as `modal.container_process` has it: `ContainerProcess`, the
process `Sandbox.exec()` returns."""

from ._sandbox import ContainerProcess

__all__ = ["ContainerProcess"]
