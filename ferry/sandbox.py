"""`ferry.sandbox`, as `modal.sandbox` has it: `Sandbox` (and its process and stream types)."""

from ._sandbox import ContainerProcess, Sandbox, StreamReader, StreamType, StreamWriter

__all__ = ["ContainerProcess", "Sandbox", "StreamReader", "StreamType", "StreamWriter"]
