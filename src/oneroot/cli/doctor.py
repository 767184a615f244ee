"""`oneroot doctor`: is this server ready, and how to fix what is not (checks in
`oneroot.ops.doctor`)."""

from __future__ import annotations

import click
from rich.text import Text

from oneroot.cli.output import console, emit_json
from oneroot.cli.state import State, json_option, pass_state
from oneroot.errors import OnerootError
from oneroot.model.inventory import Inventory
from oneroot.ops import doctor as doc_ops
from oneroot.ops import inventory as inv_ops

LEVEL_STYLE = {"ok": "green", "warning": "yellow", "error": "bold red"}


def _load_inventory(state: State) -> Inventory | None:
    if not inv_ops.inventory_exists(state.paths):
        return None
    return state.load()


def _show(findings: list[doc_ops.Finding], *, show_all: bool) -> None:
    shown = [f for f in findings if show_all or f.level is not doc_ops.Level.OK]
    for f in shown:
        line = Text()
        line.append(f"{f.level:<8}", style=LEVEL_STYLE[str(f.level)])
        line.append(f"{f.check:<16}{f.message}")
        console.print(line)
        if f.fix:
            console.print(Text(f"{'':<24}fix: {f.fix}", style="dim"))
    counts = {lvl: sum(f.level is lvl for f in findings) for lvl in doc_ops.Level}
    console.print(f"{counts[doc_ops.Level.OK]} ok, "
                  f"{counts[doc_ops.Level.WARNING]} warning(s), "
                  f"{counts[doc_ops.Level.ERROR]} error(s)")


@click.command()
@json_option
@click.option("--all", "show_all", is_flag=True, help="Show passing checks too.")
@pass_state
def doctor(state: State, as_json: bool, show_all: bool) -> None:
    """Check this server: kernel features, NFS server, free ports, boot binaries, images
    and the inventory; say how to fix each finding. Exits 1 when a check fails."""
    try:
        inv = _load_inventory(state)
    except OnerootError as exc:
        inv = None
        console.print(f"[red]cannot read the inventory: {exc}[/red]")
    findings = doc_ops.run_checks(inv, state.paths)
    failed = doc_ops.has_errors(findings)
    if as_json:
        emit_json({"ok": not failed, "findings": [f.as_dict() for f in findings]})
    else:
        _show(findings, show_all=show_all)
    if failed:
        errors = sum(f.level is doc_ops.Level.ERROR for f in findings)
        raise OnerootError(f"doctor: {errors} check(s) failed",
                           hint="apply the fix lines above, then run `oneroot doctor` again")
