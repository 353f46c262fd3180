"""`ferry.stream_type`, as `modal.stream_type` has it: `StreamType` (where the output of
`Sandbox.exec` goes)."""

from ._sandbox import StreamType

__all__ = ["StreamType"]
