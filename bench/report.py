"""How a benchmark talks: progress on stderr, every figure to a JSON file, the table to stdout."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console


def log(message: str) -> None:
    """A progress line on stderr, so stdout keeps only the table."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def publish(
    results: dict[str, Any],
    out: Path,
    render_table: Callable[[dict[str, Any], Console], None],
    table_width: int,
) -> None:
    """Write `results` to `out` as JSON, then print the table (at `table_width` columns when stdout is no terminal)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    # Piped to a file, rich would squeeze the table into 80 columns.
    console = Console() if sys.stdout.isatty() or "COLUMNS" in os.environ else Console(width=table_width)
    render_table(results, console)
    console.print(f"results: {out}", highlight=False, soft_wrap=True)
