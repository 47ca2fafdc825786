"""How ``roost`` prints: one JSON document for scripts (``--json``), rich for people.

rich is imported when something is printed for a person, never for ``--json`` or
``--help``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


def print_json(document: Any) -> None:
    """Print ``document`` as one JSON document on stdout (keys as given, UTF-8)."""
    json.dump(document, sys.stdout, ensure_ascii=False, indent=2, default=_jsonable)
    sys.stdout.write("\n")
    sys.stdout.flush()


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


@cache
def console() -> Console:
    """The console people read (stdout)."""
    from rich.console import Console

    return Console(highlight=False)


@cache
def error_console() -> Console:
    """The console for progress and notes (stderr)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def print_table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None
) -> None:
    """A table of ``rows`` under ``columns``; an empty list says so instead."""
    from rich.table import Table

    table = Table(*columns, title=title, title_justify="left")
    count = 0
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
        count += 1
    if count:
        console().print(table)
    else:
        console().print(f"[dim]({title or 'nothing'}: none)[/dim]")
