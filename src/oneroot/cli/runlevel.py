"""`oneroot runlevel add|list|rm|apply`: named sets of services nodes boot into."""

from __future__ import annotations

import click

from oneroot.cli.output import console, emit_json, show_changes, table
from oneroot.cli.state import State, json_option, pass_state
from oneroot.ops import inventory as inv_ops
from oneroot.ops.runlevels import apply_runlevels


@click.group()
def runlevel() -> None:
    """Named sets of services nodes boot into (systemd targets / OpenRC runlevels)."""


@runlevel.command("add")
@click.argument("name")
@click.option("--service", "services", multiple=True, help="A service it starts.")
@click.option("--description", default="")
@pass_state
def runlevel_add(state: State, name: str, services: tuple[str, ...], description: str) -> None:
    with state.store() as store:
        show_changes(inv_ops.put_runlevel(store, name, services, description, create=True))


@runlevel.command("list")
@json_option
@pass_state
def runlevel_list(state: State, as_json: bool) -> None:
    rls = sorted(state.load().runlevels.values(), key=lambda r: r.name)
    if as_json:
        emit_json([{"name": r.name, "services": list(r.services),
                    "description": r.description} for r in rls])
        return
    table(None, ["runlevel", "services", "description"],
          [(r.name, " ".join(r.services), r.description) for r in rls])


@runlevel.command("rm")
@click.argument("name")
@pass_state
def runlevel_rm(state: State, name: str) -> None:
    with state.store() as store:
        show_changes(inv_ops.remove_runlevel(store, name))


@runlevel.command("apply")
@json_option
@pass_state
def runlevel_apply(state: State, as_json: bool) -> None:
    """Write every runlevel as a systemd target / OpenRC runlevel into the images nodes boot
    (into each node's own layer when the image is the server's live /). Idempotent."""
    result = apply_runlevels(state.cluster())
    if as_json:
        emit_json({"written": [str(p) for p in result.written],
                   "removed": [str(p) for p in result.removed], "skipped": result.skipped})
        return
    for p in result.written:
        console.print(f"wrote {p}", markup=False)
    for p in result.removed:
        console.print(f"removed {p}", markup=False)
    for why in result.skipped:
        console.print(f"left alone: {why}", markup=False)
    if not (result.changed or result.skipped):
        console.print("runlevels: nothing to change", markup=False)
