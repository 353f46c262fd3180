"""`ferry.output`, as `modal.output` has it: `enable_output`."""

from . import enable_output

__all__ = ["enable_output"]
