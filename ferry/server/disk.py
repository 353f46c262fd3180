"""A full disk, reported as such: what failed, where, how much is free, and what to do.

Every request runs through `Connection._answer`, which turns an `OSError` with ENOSPC/EDQUOT
(blob and chunk writes, manifests, image files) or SQLite's "database or disk is full" into a
`ServerError` with `full_disk_message`. Writers clean up what they had half written, and a
volume commit records nothing until its manifest is written (server/volumes.py), so a full
disk leaves the previous state and the server keeps serving.
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path

_FULL = (errno.ENOSPC, errno.EDQUOT)


def is_full_disk(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in _FULL
    return isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc)


def full_disk_message(exc: BaseException, method: str) -> str:
    """One line for a full disk met while answering `method`."""
    where = getattr(exc, "filename", None) or str(_home())
    free = ""
    try:
        usage = shutil.disk_usage(_existing(Path(where)))
        free = f" ({_mib(usage.free)} free of {_mib(usage.total)})"
    except OSError:
        pass
    return (f"The server's disk is full: {method} could not write to {where}{free}; the request did not "
            f"complete and nothing was committed. Free space on that filesystem (FERRY_HOME is {_home()}): "
            "`ferry server gc` deletes data nothing refers to; `ferry volume delete`, `ferry image rm` and lower "
            "FERRY_LOG_RETENTION_* settings free more. Then try again.")


def _home() -> Path:
    from .. import _config

    return _config.get("home")


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _mib(size: int) -> str:
    return f"{size / 1024 / 1024:.0f} MiB"
