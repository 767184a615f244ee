"""`oneroot rootspec check`: the `root=` layer grammar, parsed and explained."""

from __future__ import annotations

import click

from oneroot.cli.output import console, emit_json, table
from oneroot.cli.state import json_option
from oneroot.rootspec import describe, format_spec, parse


@click.group()
def rootspec() -> None:
    """The `root=` layer grammar."""


@rootspec.command("check")
@click.argument("spec")
@json_option
def rootspec_check(spec: str, as_json: bool) -> None:
    """Parse SPEC and print its layers, top to bottom (or the error, with a caret)."""
    parsed = parse(spec)
    rows = describe(parsed)
    if as_json:
        emit_json({"canonical": format_spec(parsed),
                   "layers": [{"position": r.position, "kind": r.kind, "source": r.text,
                               "mode": str(r.mode), "options": list(r.options), "note": r.note}
                              for r in rows]})
        return
    table(None, ["layer", "source", "mode", "options", "note"],
          [(r.position, r.text, r.mode, ",".join(r.options) or "-", r.note) for r in rows])
    console.print(f"canonical: {format_spec(parsed)}")
