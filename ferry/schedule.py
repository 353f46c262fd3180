"""`ferry.schedule`, as `modal.schedule` has it: `Cron` and `Period`."""

from ._schedule import Cron, Period

__all__ = ["Cron", "Period"]
