"""Finding and starting the local server: an unusable FERRY_HOME, and the one-line cause a
server that stopped gives in its log."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry import _local_server
from ferry._local_server import FAILURE_PREFIX, failure_cause, usable_home
from ferry.exception import InvalidError


def test_usable_home_creates_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FERRY_HOME", str(tmp_path / "a" / "b"))
    assert usable_home() == tmp_path / "a" / "b" and (tmp_path / "a" / "b").is_dir()


def test_usable_home_refuses_what_cannot_be_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FERRY_HOME", str(tmp_path))
    monkeypatch.setattr(_local_server.os, "access", lambda path, mode: False)  # e.g. a read-only mount
    with pytest.raises(InvalidError, match=f"FERRY_HOME={tmp_path} cannot be used .*not writable"):
        usable_home()
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("FERRY_HOME", str(blocker / "home"))
    with pytest.raises(InvalidError, match="Not a directory"):
        usable_home()


def test_failure_cause_reads_what_this_start_wrote(tmp_path: Path):
    log = tmp_path / "server.log"
    log.write_text(f"{FAILURE_PREFIX}an old failure\n")
    offset = log.stat().st_size
    with open(log, "a") as handle:
        handle.write("Traceback (most recent call last):\n  ...\nValueError: x\n")
        handle.write(f"{FAILURE_PREFIX}The web gateway cannot listen on 127.0.0.1:1.\n")
    assert failure_cause(log, offset) == "The web gateway cannot listen on 127.0.0.1:1."
    with open(log, "a") as handle:
        offset = handle.tell()
        handle.write("Killed\n\n")
    assert failure_cause(log, offset) == "Killed"  # no cause given: the last line written
    assert failure_cause(log, log.stat().st_size) is None
    assert failure_cause(tmp_path / "missing.log") is None
