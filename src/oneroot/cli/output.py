"""How commands show results: Rich tables for people, JSON for scripts.

Text that a node, a packet or a file controls (stage messages, vendor classes, file names,
host names) is shown with `plain()`: never read as Rich markup, and with every C0/C1 control
character (ESC, CR, BEL, DEL, CSI...) written out as `\\x1b`-style text, so it can neither crash
the renderer (`[/x]`) nor send escape sequences to the administrator's terminal.
`table()` shows every cell that way.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from oneroot.model.inventory import Change

# Piped output is read by scripts and people alike: never fold a path at 80 columns.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 240)
err_console = Console(stderr=True, highlight=False)


def visible(value: object) -> str:
    """`value` as one line of printable text: C0 and C1 control characters, DEL and the
    line and paragraph separators become `\\xNN` / `\\uNNNN`; a backslash becomes `\\\\` so
    that the escapes cannot be forged."""
    text = "" if value is None else str(value)
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(_visible_char(ch) for ch in text)


def _visible_char(ch: str) -> str:
    if ch == "\\":
        return "\\\\"
    if ch.isprintable() or ch == " ":
        return ch
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def plain(value: object, style: str = "") -> Text:
    """Untrusted text for Rich: shown as written (no markup), controls made visible."""
    return Text(visible(value), style=style)


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    t = Table(title=title, title_justify="left", box=None, header_style="bold",
              pad_edge=False)
    for col in columns:
        t.add_column(col, overflow="fold")
    for row in rows:
        t.add_row(*(v if isinstance(v, Text) else plain(v) for v in row))
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
    """A profile value as one cell: lists space separated (as a JSON list when an item holds
    white space: check_commands), `-` for nothing."""
    if isinstance(value, tuple):
        if any(not item or any(c.isspace() for c in item) for item in value):
            return json.dumps(list(value))
        return " ".join(value) if value else "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if value != "" else "-"
