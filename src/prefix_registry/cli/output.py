"""How commands print: JSON for scripts (`--json`), tables for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

error_console = Console(stderr=True)


def _console() -> Console:
    # Off a terminal (a pipe, a file, a test) rich would squeeze tables into 80 columns and cut cells short.
    return Console() if sys.stdout.isatty() else Console(width=200)


def print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*["" if cell is None else str(cell) for cell in row])
    _console().print(table)


def print_pairs(title: str, pairs: dict[str, Any]) -> None:
    print_table(title, ["", "value"], [(key, _format(value)) for key, value in pairs.items()])


def fmt_metric(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)
