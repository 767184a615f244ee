"""`oneroot inventory export|apply`: the whole inventory as declarative YAML, for git."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from oneroot.cli.output import console, show_changes
from oneroot.cli.state import State, operator, pass_state
from oneroot.errors import UsageError
from oneroot.fsutil import write_atomic
from oneroot.inventory.yamlform import from_yaml, to_yaml
from oneroot.ops import inventory as inv_ops
from oneroot.ops.image_versions import with_stored_versions
from oneroot.ops.pin_history import record_hand_pins


@click.group()
def inventory() -> None:
    """The whole inventory as declarative YAML, for git."""


@inventory.command("export")
@click.option("--out", "-o", type=click.Path(path_type=Path, dir_okay=False), default=None)
@pass_state
def inventory_export(state: State, out: Path | None) -> None:
    text = to_yaml(state.load())
    if out is None:
        sys.stdout.write(text)
    else:
        write_atomic(out, text.encode())
        console.print(f"wrote {out}")


@inventory.command("apply")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, allow_dash=True))
@click.option("--dry-run", is_flag=True, help="Show the plan only.")
@pass_state
def inventory_apply(state: State, file: Path, dry_run: bool) -> None:
    """Make the inventory equal FILE: shows the plan, then applies it."""
    try:
        text = sys.stdin.read() if str(file) == "-" else file.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror}") from None
    new = from_yaml(text, source=str(file))
    with state.store() as store:
        before = store.load()
        new = with_stored_versions(before, new)
        changes = inv_ops.commit(store, new, dry_run=dry_run)
        if not dry_run:
            record_hand_pins(state.paths, before, store.load(), who=operator())
    show_changes(changes, applied=not dry_run)
