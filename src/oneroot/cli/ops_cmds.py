"""Operations commands: `oneroot doctor` (is this server ready, and how to fix what is not) and
`oneroot completion SHELL` (click's completion script for bash, zsh or fish).

Registered on the main group by `register(cli)`; the checks are in `oneroot.ops.doctor`.
"""

from __future__ import annotations

import contextlib
from typing import Protocol

import click
from click.shell_completion import get_completion_class
from rich.text import Text

from oneroot.cli.output import console, emit_json
from oneroot.errors import OnerootError
from oneroot.model.inventory import Inventory
from oneroot.ops import doctor as doc_ops
from oneroot.ops import inventory as inv_ops
from oneroot.ops.paths import Paths

LEVEL_STYLE = {"ok": "green", "warning": "yellow", "error": "bold red"}
COMPLETE_VAR = "_ONEROOT_COMPLETE"


class _HasPaths(Protocol):
    paths: Paths


def _load_inventory(paths: Paths) -> Inventory | None:
    if not paths.inventory_db.exists():
        return None
    with contextlib.closing(inv_ops.open_store(paths)) as store:
        return store.load()


def register(cli: click.Group) -> None:
    @cli.command()
    @click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
    @click.option("--all", "show_all", is_flag=True, help="Show passing checks too.")
    @click.pass_obj
    def doctor(obj: _HasPaths, as_json: bool, show_all: bool) -> None:
        """Check this server: kernel features, NFS server, free ports, boot binaries, images
        and the inventory; say how to fix each finding. Exits 1 when a check fails."""
        try:
            inv = _load_inventory(obj.paths)
        except OnerootError as exc:
            inv = None
            console.print(f"[red]cannot read the inventory: {exc}[/red]")
        findings = doc_ops.run_checks(inv, obj.paths)
        failed = doc_ops.has_errors(findings)
        if as_json:
            emit_json({"ok": not failed, "findings": [f.as_dict() for f in findings]})
        else:
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
        if failed:
            errors = sum(f.level is doc_ops.Level.ERROR for f in findings)
            raise OnerootError(f"doctor: {errors} check(s) failed",
                               hint="apply the fix lines above, then run `oneroot doctor` "
                                    "again")

    @cli.command()
    @click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
    @click.pass_context
    def completion(ctx: click.Context, shell: str) -> None:
        """Print the shell completion script, e.g.
        `oneroot completion bash > /etc/bash_completion.d/oneroot`."""
        root = ctx.find_root().command
        cls = get_completion_class(shell)
        assert cls is not None  # the Choice above lists only shells click knows
        click.echo(cls(root, {}, "oneroot", COMPLETE_VAR).source())
