"""Terminal output: tables on stdout, progress on stderr (so stdout stays clean for pipes)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from llmc.codegen.report import Table

stdout = Console(highlight=False)
stderr = Console(stderr=True, highlight=False)


def tables(items: list[Table]) -> None:
    for t in items:
        rich_table = RichTable(title=t.title, title_justify="left", show_header=any(t.columns))
        for c in t.columns:
            rich_table.add_column(c)
        for row in t.rows:
            rich_table.add_row(*(Text(cell) for cell in row))  # Text: "[1, 128]" is not markup
        stdout.print(rich_table)


def as_json(obj) -> None:
    stdout.out(json.dumps(obj, indent=1, sort_keys=True, default=str), highlight=False)


def error(text: str) -> None:
    """``error: <text>`` as one line on stderr."""
    print(f"error: {' '.join(text.split())}", file=sys.stderr)


def line(text: str) -> None:
    """A line of plain text, never wrapped (paths stay whole for people and scripts)."""
    stdout.print(Text(text), soft_wrap=True)


@contextmanager
def status(text: str) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr while a long step runs; yields a function that changes its text."""
    with stderr.status(Text(text)) as s:
        yield lambda new: s.update(Text(new))
