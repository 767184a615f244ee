"""`oneroot group add|list|show|set|rm`: profiles shared by nodes."""

from __future__ import annotations

from typing import Any

import click

from oneroot.cli.output import console, emit_json, show_changes, table, value_text
from oneroot.cli.state import State, json_option, operator, pass_state
from oneroot.ops import inventory as inv_ops
from oneroot.ops.pin_history import record_hand_pins


@click.group()
def group() -> None:
    """Profiles shared by nodes: kernel, runlevel, layers, kernel args…"""


@group.command("add")
@click.argument("name")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE")
@click.option("--description", default="")
@pass_state
def group_add(state: State, name: str, sets: tuple[str, ...], description: str) -> None:
    with state.store() as store:
        before = store.load()
        changes = inv_ops.add_group(store, name, inv_ops.parse_overrides(sets), description)
        record_hand_pins(state.paths, before, store.load(), who=operator())
    show_changes(changes)


@group.command("list")
@json_option
@pass_state
def group_list(state: State, as_json: bool) -> None:
    inv = state.load()
    rows = []
    for g in sorted(inv.groups.values(), key=lambda g: g.name):
        members = sum(1 for n in inv.nodes.values() if g.name in n.groups)
        rows.append({"name": g.name, "description": g.description, "nodes": members,
                     "values": {k: list(v) if isinstance(v, tuple) else v
                                for k, v in g.values.items()}})
    if as_json:
        emit_json(rows)
        return
    table(None, ["group", "nodes", "sets", "description"],
          [(r["name"], r["nodes"], _values_line(r["values"]), r["description"]) for r in rows])


def _values_line(values: Any) -> str:
    return " ".join(f"{k}={','.join(v) if isinstance(v, list) else value_text(v)}"
                    for k, v in values.items())


@group.command("show")
@click.argument("name")
@json_option
@pass_state
def group_show(state: State, name: str, as_json: bool) -> None:
    inv = state.load()
    g = inv_ops.get_group(inv, name)
    members = sorted(n.name for n in inv.nodes.values() if name in n.groups)
    if as_json:
        emit_json({"name": g.name, "description": g.description, "nodes": members,
                   "values": {k: list(v) if isinstance(v, tuple) else v
                              for k, v in g.values.items()}})
        return
    table(f"group {g.name}", ["setting", "value"],
          [(k, value_text(v)) for k, v in g.values.items()] or [("(nothing set)", "")])
    console.print(f"nodes: {', '.join(members) or '-'}")


@group.command("set")
@click.argument("name")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE")
@click.option("--unset", multiple=True, metavar="KEY")
@click.option("--description", default=None)
@pass_state
def group_set(state: State, name: str, sets: tuple[str, ...], unset: tuple[str, ...],
              description: str | None) -> None:
    with state.store() as store:
        before = store.load()
        changes = inv_ops.set_group(store, name, inv_ops.parse_overrides(sets), unset,
                                    description)
        record_hand_pins(state.paths, before, store.load(), who=operator())
    show_changes(changes)


@group.command("rm")
@click.argument("name")
@pass_state
def group_rm(state: State, name: str) -> None:
    with state.store() as store:
        show_changes(inv_ops.remove_group(store, name))
