"""How commands show results: Rich tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from oneroot.model.inventory import Change

# Piped output is read by scripts and people alike: never fold a path at 80 columns.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 240)
err_console = Console(stderr=True, highlight=False)


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    t = Table(title=title, title_justify="left", box=None, header_style="bold",
              pad_edge=False)
    for col in columns:
        t.add_column(col, overflow="fold")
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    console.print(t)


def show_changes(changes: Sequence[Change], *, applied: bool = True) -> None:
    if not changes:
        console.print("no changes")
        return
    for ch in changes:
        colour = {"add": "green", "remove": "red", "change": "yellow"}[ch.action]
        console.print(f"[{colour}]{ch.describe()}[/{colour}]")
    verb = "applied" if applied else "planned"
    console.print(f"{len(changes)} change(s) {verb}")


def value_text(value: Any) -> str:
    """A profile value as one cell: lists space separated, `-` for nothing."""
    if isinstance(value, tuple):
        return " ".join(value) if value else "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if value != "" else "-"
