"""Full-disk errors: which failures count, and what the message tells the user."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest

from ferry.server.disk import full_disk_message, is_full_disk


def test_which_failures_are_a_full_disk() -> None:
    assert is_full_disk(OSError(errno.ENOSPC, "No space left on device"))
    assert is_full_disk(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_full_disk(sqlite3.OperationalError("database or disk is full"))
    assert not is_full_disk(OSError(errno.EACCES, "Permission denied"))
    assert not is_full_disk(sqlite3.OperationalError("database is locked"))
    assert not is_full_disk(ValueError("disk is full"))


def test_the_message_says_where_how_much_is_free_and_what_to_do(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_HOME", str(tmp_path))
    where = tmp_path / "blobs" / "ab"  # (not created: the nearest existing directory is measured)
    message = full_disk_message(OSError(errno.ENOSPC, "No space left on device", str(where)), "volume.put_chunks")
    assert message.startswith(f"The server's disk is full: volume.put_chunks could not write to {where} (")
    assert " MiB free of " in message and f"FERRY_HOME is {tmp_path}" in message
    assert "`ferry server gc`" in message and "try again" in message
