"""`ferry.app`, as `modal.app` has it: `App` and `LocalEntrypoint`."""

from ._app import App, LocalEntrypoint

__all__ = ["App", "LocalEntrypoint"]
