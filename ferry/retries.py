"""`ferry.retries`, as `modal.retries` has it: `Retries`."""

from ._resources import Retries

__all__ = ["Retries"]
