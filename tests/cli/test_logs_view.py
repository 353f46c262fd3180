"""`ferry app logs` options: `--since` parsing, the live-push filter, `--timestamps` lines."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import pytest
import typer

from ferry.cli.logs_view import LogFilter, LogPrinter, format_ts, parse_since

NOW = 1_700_000_000.0


@pytest.mark.parametrize("text, ago", [("30s", 30), ("10m", 600), ("1h", 3600), ("2d", 172800),
                                       ("1h30m", 5400), ("1.5h", 5400), (" 5m ", 300)])
def test_since_durations(text: str, ago: float):
    assert parse_since(text, now=NOW) == NOW - ago


def test_since_times():
    assert parse_since("2023-11-14T22:13:20Z") == NOW
    assert parse_since("2023-11-14T23:13:20+01:00") == NOW
    local = datetime(2023, 11, 14, 22, 13, 20)
    assert parse_since("2023-11-14T22:13:20") == local.timestamp()  # naive: local time
    assert parse_since("2023-11-14") == datetime(2023, 11, 14).timestamp()


@pytest.mark.parametrize("text", ["", "yesterday", "10", "5 minutes", "1h-", "m"])
def test_since_rejects_what_it_cannot_read(text: str):
    with pytest.raises(typer.BadParameter, match="neither a duration"):
        parse_since(text)


def test_filter_matches_stored_entries_and_live_pushes():
    stored = {"function": "f", "container_id": "ct-abc123", "ts": NOW, "text": "x"}
    pushed = {"function": "f", "container": "ct-abc123", "ts": NOW, "text": "x"}
    for entry in (stored, pushed):
        assert LogFilter().accepts(entry)
        assert LogFilter(since=NOW, function="f", container="ct-abc").accepts(entry)
        assert not LogFilter(since=NOW + 1).accepts(entry)
        assert not LogFilter(function="g").accepts(entry)
        assert not LogFilter(container="ct-x").accepts(entry)


def test_timestamps_start_every_line_and_only_lines():
    out, err = io.StringIO(), io.StringIO()
    printer = LogPrinter(timestamps=True, stdout=out, stderr=err)
    stamp = format_ts(NOW)
    assert stamp == "2023-11-14T22:13:20.000Z"
    printer({"container_id": "a", "stream": "stdout", "ts": NOW, "text": "one\ntwo\nthr"})
    printer({"container_id": "b", "stream": "stdout", "ts": NOW, "text": "other\n"})
    printer({"container_id": "a", "stream": "stdout", "ts": NOW + 1, "text": "ee\nfour\n"})
    printer({"container_id": "a", "stream": "stderr", "ts": NOW, "text": "oops\n"})
    later = format_ts(NOW + 1)
    assert out.getvalue() == (f"{stamp} one\n{stamp} two\n{stamp} thr{stamp} other\nee\n{later} four\n")
    assert err.getvalue() == f"{stamp} oops\n"


def test_json_records_one_per_line_on_stdout():
    out, err = io.StringIO(), io.StringIO()
    printer = LogPrinter(as_json=True, stdout=out, stderr=err)
    printer({"function": "f", "container_id": "ct-1", "stream": "stderr", "ts": NOW, "text": "a\nb"})
    printer({"function": "f", "container": "ct-2", "stream": "stdout", "ts": NOW, "text": "c\n"})
    assert err.getvalue() == ""
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [
        {"ts": NOW, "function": "f", "container": "ct-1", "stream": "stderr", "text": "a\nb"},
        {"ts": NOW, "function": "f", "container": "ct-2", "stream": "stdout", "text": "c\n"}]


def test_without_timestamps_text_is_unchanged():
    out = io.StringIO()
    LogPrinter(stdout=out)({"container_id": "a", "stream": "stdout", "ts": NOW, "text": "a\nb"})
    assert out.getvalue() == "a\nb"
    assert datetime.fromtimestamp(NOW, timezone.utc).year == 2023
