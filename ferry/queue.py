"""`ferry.queue`, as `modal.queue` has it: `Queue`."""

from ._queue import Queue

__all__ = ["Queue"]
