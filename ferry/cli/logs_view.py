"""`ferry app logs`: which entries to show (`--since`, `--function`, `--container`) and how
(`--timestamps`).

Entries are the server's log records: `{function, container_id, stream, ts, text}` (live
`log` pushes call the container `container`). A record's text is what a container wrote in
one go, so it may hold several lines, or end in the middle of one. With `--json`, each record
is one line of JSON: `{"ts", "function", "container", "stream", "text"}`.
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TextIO

import typer

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, *, now: float | None = None) -> float:
    """`--since`: a duration ago (`30s`, `10m`, `1h`, `2d`, `1h30m`) or an ISO 8601 time (local
    time unless it carries an offset), as seconds since the epoch."""
    value = text.strip()
    if value and _DURATION.sub("", value) == "":
        seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION.findall(value))
        return (time.time() if now is None else now) - seconds
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is neither a duration (30s, 10m, 1h, 2d, 1h30m) nor a time "
                                 "(2025-01-31T08:00, 2025-01-31 08:00:00+02:00).", param_hint="--since") from None
    return when.timestamp()  # a naive time is local time


@dataclass(frozen=True)
class LogFilter:
    """The entries `--since`, `--function` and `--container` select (the server applies the
    same filters to the stored history; this one applies them to live pushes)."""

    since: float | None = None
    function: str | None = None
    container: str | None = None

    def accepts(self, entry: dict[str, Any]) -> bool:
        container = entry.get("container_id") or entry.get("container") or ""
        return ((self.since is None or entry.get("ts", 0) >= self.since)
                and (self.function is None or entry.get("function") == self.function)
                and (self.container is None or container.startswith(self.container)))


def format_ts(ts: float) -> str:
    """`2025-01-31T08:00:00.123Z`."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class LogPrinter:
    """Writes entries to stdout (stderr for what containers wrote to stderr), as they were
    written; with `timestamps`, every line starts with the time of the entry that began it."""

    def __init__(self, *, timestamps: bool = False, as_json: bool = False, stdout: TextIO | None = None,
                 stderr: TextIO | None = None) -> None:
        self.timestamps = timestamps
        self.as_json = as_json  # one JSON object per entry, on stdout: JSON_KEYS
        self._streams = {"stdout": stdout, "stderr": stderr}
        self._mid_line: set[tuple[str, str]] = set()  # (container, stream) whose last line is unfinished

    def _stream(self, name: str) -> TextIO:
        chosen = self._streams.get("stderr" if name == "stderr" else "stdout")
        return chosen or (sys.stderr if name == "stderr" else sys.stdout)

    def __call__(self, entry: dict[str, Any]) -> None:
        stream, text = entry.get("stream", "stdout"), entry.get("text", "")
        if self.as_json:
            out = self._stream("stdout")
            out.write(json.dumps({"ts": entry.get("ts"), "function": entry.get("function"),
                                  "container": entry.get("container_id") or entry.get("container"),
                                  "stream": stream, "text": text}, ensure_ascii=False) + "\n")
            out.flush()
            return
        out = self._stream(stream)
        if self.timestamps and text:
            key = (entry.get("container_id") or entry.get("container") or "", stream)
            stamp = format_ts(float(entry.get("ts", 0))) + " "
            lines = [line for line in re.split(r"(?<=\n)", text) if line]
            text = "".join(line if i == 0 and key in self._mid_line else stamp + line
                           for i, line in enumerate(lines))
            if text.endswith("\n"):
                self._mid_line.discard(key)
            else:
                self._mid_line.add(key)
        out.write(text)
        out.flush()

    def close(self) -> None:
        for name in ("stdout", "stderr"):
            self._stream(name).flush()
