"""`ferry.image`, as `modal.image` has it: `Image`."""

from ._image import Image

__all__ = ["Image"]
