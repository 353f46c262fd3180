"""`ferry.io_streams`, as `modal.io_streams` has it: the stdout/stderr readers and the stdin
writer of sandbox processes."""

from ._sandbox import StreamReader, StreamWriter

__all__ = ["StreamReader", "StreamWriter"]
