"""The CLI's consoles: piped output is never cut or wrapped; hints are never broken by Rich;
tables in a terminal fit its width."""

from __future__ import annotations

import io
import json

import pytest
from rich.table import Table

from ferry.cli.output import _Console, print_json

LONG_ID = "ap-" + "0123456789abcdef" * 4
HINT = f"Stop it with `ferry app stop {'long-app-name-' * 8}`."


def _table() -> Table:
    table = Table()
    table.add_column("app id")
    table.add_column("name")
    table.add_row(LONG_ID, "a name with several words " * 3)
    return table


def test_piped_output_is_never_cut(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("COLUMNS", "40")
    out = io.StringIO()
    console = _Console(file=out, highlight=False, soft_wrap=True)
    console.print(_table())
    console.print(HINT)
    lines = out.getvalue().splitlines()
    assert any(LONG_ID in line and ("a name with several words " * 3).strip() in line for line in lines)
    assert HINT in lines


def test_a_terminal_wraps_table_cells_but_not_hints():
    out = io.StringIO()
    console = _Console(file=out, force_terminal=True, width=60, highlight=False, soft_wrap=True, color_system=None)
    console.print(_table())
    console.print(HINT)
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 60 for line in lines[:-1]) and len(lines) > 6  # the table's cells wrapped
    assert lines[-1] == HINT  # one line; the terminal wraps it where it must


def test_print_json(capsys: pytest.CaptureFixture[str]):
    print_json({"name": "é", "n": [1, 2]})
    assert json.loads(capsys.readouterr().out) == {"name": "é", "n": [1, 2]}
