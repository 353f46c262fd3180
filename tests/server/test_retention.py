"""Log retention on its own: old and excess lines of each app go, recent ones stay."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ferry.exception import InvalidError
from ferry.server.retention import LogRetention, log_bytes, prune_logs
from ferry.server.store import Store


def _store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state.db")


def test_lines_older_than_the_age_limit_go_and_recent_ones_stay(tmp_path: Path) -> None:
    store = _store(tmp_path)
    now = time.time()
    for index in range(5000):  # more than one delete batch
        store.add_log("ap-old", "f", "ct-1", "stdout", now - 10 * 86400 + index, f"old {index}")
    for index in range(3):
        store.add_log("ap-old", "f", "ct-1", "stdout", now - 60 + index, f"recent {index}")
        store.add_log("ap-new", "f", "ct-2", "stdout", now - 60 + index, f"new {index}")
    store.flush_logs()
    deleted = prune_logs(store.path, LogRetention(max_age=7 * 86400, max_bytes=None), now=now)
    assert deleted == 5000
    assert [e["text"] for e in store.logs("ap-old")] == ["recent 0", "recent 1", "recent 2"]
    assert [e["text"] for e in store.logs("ap-new")] == ["new 0", "new 1", "new 2"]
    assert prune_logs(store.path, LogRetention(max_age=7 * 86400, max_bytes=None), now=now) == 0


def test_each_app_keeps_its_newest_lines_within_the_size_limit(tmp_path: Path) -> None:
    store = _store(tmp_path)
    now = time.time()
    for index in range(100):
        store.add_log("ap-big", "f", "ct-1", "stdout", now, f"{index:09d}\n")  # 10 bytes each
    store.add_log("ap-small", "f", "ct-2", "stdout", now, "tiny\n")
    store.flush_logs()
    first_seq = store.logs("ap-big")[0]["seq"]
    assert prune_logs(store.path, LogRetention(max_age=None, max_bytes=250)) == 75
    kept = store.logs("ap-big")
    assert [e["text"] for e in kept] == [f"{i:09d}\n" for i in range(75, 100)]
    assert [e["text"] for e in store.logs("ap-small")] == ["tiny\n"]
    # a follower reading after a sequence number it had sees only newer lines, in order
    assert [e["seq"] for e in store.logs("ap-big", after_seq=first_seq)] == [e["seq"] for e in kept]
    assert log_bytes(store.path) > 0
    store.close()


def test_zero_means_no_limit(monkeypatch) -> None:
    monkeypatch.setenv("FERRY_LOG_RETENTION_DAYS", "0")
    monkeypatch.setenv("FERRY_LOG_RETENTION_MB_PER_APP", "0")
    assert LogRetention.from_settings() == LogRetention(max_age=None, max_bytes=None)
    monkeypatch.setenv("FERRY_LOG_RETENTION_DAYS", "1.5")
    monkeypatch.setenv("FERRY_LOG_RETENTION_MB_PER_APP", "2")
    assert LogRetention.from_settings() == LogRetention(max_age=1.5 * 86400, max_bytes=2 * 1024 * 1024)


def test_a_negative_setting_is_refused_with_its_name(monkeypatch) -> None:
    monkeypatch.setenv("FERRY_LOG_RETENTION_MB_PER_APP", "-1")
    with pytest.raises(InvalidError, match="FERRY_LOG_RETENTION_MB_PER_APP=-1.0 is negative"):
        LogRetention.from_settings()
