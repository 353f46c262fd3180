"""`ferry.secret`, as `modal.secret` has it: `Secret`."""

from ._secret import Secret

__all__ = ["Secret"]
