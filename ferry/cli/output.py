"""How commands print, for people and for scripts.

- `--json` (`json_option()`, `print_json()`): one JSON document on stdout, keys that stay the same
  from release to release (new keys may be added; none is renamed or removed).
- `console()`: lines are never broken by Rich (soft wrap: a hint such as `ferry app stop NAME`
  wraps only where the terminal wraps it; tables in a terminal wrap inside their cells), and
  when the output is not a terminal nothing is cut or wrapped at all: tables keep full ids and
  names, whatever the width.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import typer
from rich.console import Console, ConsoleDimensions
from rich.table import Table

UNLIMITED_WIDTH = 100_000


class _Console(Console):
    """A Rich console that is as wide as its widest line when it does not write to a terminal."""

    @property
    def size(self) -> ConsoleDimensions:
        if self.is_terminal:  # (when piped, COLUMNS does not narrow the output either)
            return super().size
        return ConsoleDimensions(UNLIMITED_WIDTH, 25)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]

    def print(self, *objects: Any, soft_wrap: bool | None = None, **options: Any) -> None:
        """As Console.print; tables are fitted to a terminal's width by wrapping their cells
        (soft wrap would cut them)."""
        if soft_wrap is None and any(isinstance(item, Table) for item in objects):
            soft_wrap = False
        super().print(*objects, soft_wrap=soft_wrap, **options)


def console(*, stderr: bool = False) -> Console:
    """The console a command prints with (stdout, or stderr for messages beside the output)."""
    return _Console(stderr=stderr, highlight=False, soft_wrap=True)


def json_option() -> Any:
    return typer.Option(False, "--json", help="Print machine-readable JSON (stable keys) instead of text.")


def print_json(data: Any) -> None:
    """Print `data` as one indented JSON document on stdout."""
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def when(ts: float | None) -> str:
    """A timestamp as local `YYYY-MM-DD HH:MM:SS` for tables (`-` for none)."""
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def size(value: Any) -> str:
    """Bytes for people: `512 B`, `3.2 MiB`."""
    amount = float(value or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return "-"
