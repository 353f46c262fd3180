"""`ferry.dict`, as `modal.dict` has it: `Dict`."""

from ._dict import Dict

__all__ = ["Dict"]
