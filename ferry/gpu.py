"""Deprecated GPU helper objects, kept so older code keeps working.

`gpu=ferry.gpu.H100(count=4)` still works but warns; write `gpu="H100:4"` instead. Each object
wraps one `ferry._gpu.GPUOption` and is accepted wherever `gpu=` is.
"""

from __future__ import annotations

from ._gpu import GPUOption, _check_count, _GPUConfig
from .exception import InvalidError, deprecation_warning

_PREFIX = "ferry.gpu"

# Frames between `warnings.warn` and the user's line: deprecation_warning -> _init -> the
# constructor (or `any()`) -> user code.
_STACKLEVEL = 4


class _DeprecatedGPU(_GPUConfig):
    """A deprecated helper for one GPU type; constructing it emits a DeprecationWarning."""

    _type: str = ""

    def __init__(self, *, count: int = 1) -> None:
        self._init(type(self).__name__, self._type, count, _count_arg(count))

    def _init(self, helper: str, gpu_type: str, count: int, args: str) -> None:
        old = f"{_PREFIX}.{helper}({args})"
        self.option = GPUOption(gpu_type, _check_count(gpu_type, count, old))
        deprecation_warning(
            f'{old} is deprecated; pass gpu="{self.option}" instead', stacklevel=_STACKLEVEL
        )


def _count_arg(count: object) -> str:
    return "" if type(count) is int and count == 1 else f"count={count!r}"


class T4(_DeprecatedGPU):
    """Deprecated: use `gpu="T4"` or `gpu="T4:<count>"`."""

    _type = "T4"


class L4(_DeprecatedGPU):
    """Deprecated: use `gpu="L4"` or `gpu="L4:<count>"`."""

    _type = "L4"


class A10G(_DeprecatedGPU):
    """Deprecated: use `gpu="A10"` or `gpu="A10:<count>"` (at most 4)."""

    _type = "A10"


class L40S(_DeprecatedGPU):
    """Deprecated: use `gpu="L40S"` or `gpu="L40S:<count>"`."""

    _type = "L40S"


class A100(_DeprecatedGPU):
    """Deprecated: use `gpu="A100-40GB"` / `gpu="A100-80GB"` (optionally `:<count>`)."""

    def __init__(self, *, size: str | None = None, count: int = 1) -> None:
        normalised = "40GB" if size is None else str(size).strip().upper()
        if not isinstance(size, (str, type(None))) or normalised not in ("40GB", "80GB"):
            raise InvalidError(
                f'Invalid A100 size {size!r}: expected "40GB" or "80GB" '
                '(or pass gpu="A100-40GB" / gpu="A100-80GB").'
            )
        args = [f'size="{size}"'] if size is not None else []
        if _count_arg(count):
            args.append(_count_arg(count))
        self._init("A100", f"A100-{normalised}", count, ", ".join(args))


class H100(_DeprecatedGPU):
    """Deprecated: use `gpu="H100"` or `gpu="H100:<count>"`."""

    _type = "H100"


class H200(_DeprecatedGPU):
    """Deprecated: use `gpu="H200"` or `gpu="H200:<count>"`."""

    _type = "H200"


class B200(_DeprecatedGPU):
    """Deprecated: use `gpu="B200"` or `gpu="B200:<count>"`."""

    _type = "B200"


class Any(_DeprecatedGPU):
    """Deprecated: use `gpu="any"` or `gpu="any:<count>"`."""

    _type = "any"


def any(*, count: int = 1) -> Any:  # noqa: A001 - mirrors the reference API
    """Deprecated: use `gpu="any"` or `gpu="any:<count>"`."""
    obj = Any.__new__(Any)
    obj._init("any", "any", count, _count_arg(count))
    return obj


__all__ = ["A100", "A10G", "Any", "B200", "H100", "H200", "L4", "L40S", "T4", "any"]
