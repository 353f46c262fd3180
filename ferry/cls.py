"""`ferry.cls`, as `modal.cls` has it: `Cls`, the instance handle `Obj`, and `parameter`."""

from ._cls import Cls, Obj, parameter

__all__ = ["Cls", "Obj", "parameter"]
