"""`oneroot node add|list|show|set|rm|reboot|unknown`: the machines of the cluster."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from oneroot.cli.output import console, emit_json, plain, show_changes, table, value_text
from oneroot.cli.power import parallel_option, run_power
from oneroot.cli.state import State, json_option, operator, pass_state
from oneroot.errors import InvalidValue, UsageError
from oneroot.model.cluster import PROFILE_KEYS, Node, ResolvedNode
from oneroot.net import MacAddress, parse_ipv4
from oneroot.ops import boot as boot_ops
from oneroot.ops import inventory as inv_ops
from oneroot.ops import leases as lease_ops
from oneroot.ops.node_removal import NodeDirArchived, NodeMustReboot, NodesRemoved, remove_nodes
from oneroot.ops.pin_history import record_hand_pins
from oneroot.ops.power import PowerAction


@click.group()
def node() -> None:
    """Add, list, show, change and remove nodes."""


@node.command("add")
@click.argument("names", required=False)
@click.option("--mac", "macs", multiple=True, help="MAC address(es), in node order.")
@click.option("--macs-file", type=click.Path(path_type=Path, dir_okay=False),
              help="File with one MAC per line, in node order.")
@click.option("--ip", "start_ip", help="Address of the first node; the rest follow.")
@click.option("--group", "groups", multiple=True, help="Group(s), in merge order.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a value.")
@click.option("--ephemeral", is_flag=True, help="Throw changes away at reboot (tmpfs top).")
@click.option("--from-unknown", "from_unknown", metavar="MAC",
              help="Adopt a machine seen by DHCP discovery.")
@click.option("--description", default="")
@click.option("--dry-run", is_flag=True, help="Show what would change, change nothing.")
@pass_state
def node_add(state: State, names: str | None, macs: tuple[str, ...], macs_file: Path | None,
             start_ip: str | None, groups: tuple[str, ...], sets: tuple[str, ...],
             ephemeral: bool, from_unknown: str | None, description: str,
             dry_run: bool) -> None:
    """Add NAMES (a name or a range such as node[01-64])."""
    if not names:
        raise UsageError("name the node(s) to add", hint="e.g. oneroot node add node01 --mac …")
    mac_list = inv_ops.read_macs(macs, macs_file)
    if from_unknown:
        mac_list = [MacAddress.parse(from_unknown)]
        if start_ip is None:
            start_ip = lease_ops.unknown_address(state.paths, mac_list[0])
    overrides = inv_ops.parse_overrides(sets)
    if ephemeral:
        overrides["ephemeral"] = True
    ip = parse_ipv4(start_ip, what="start address") if start_ip else None
    with state.store() as store:
        before = store.load()
        changes = inv_ops.add_nodes(store, names=names, macs=mac_list, start_ip=ip,
                                    groups=groups, overrides=overrides,
                                    description=description, dry_run=dry_run)
        if not dry_run:
            record_hand_pins(state.paths, before, store.load(), who=operator())
    show_changes(changes, applied=not dry_run)
    if from_unknown and not dry_run:
        lease_ops.forget_unknown(state.paths, mac_list[0])


def _node_row(node: Node) -> dict[str, Any]:
    return {"name": node.name, "macs": [str(m) for m in node.macs], "ip": str(node.address),
            "groups": list(node.groups), "description": node.description}


@node.command("list")
@json_option
@pass_state
def node_list(state: State, as_json: bool) -> None:
    nodes = sorted(state.load().nodes.values(), key=lambda n: n.name)
    if as_json:
        emit_json([_node_row(n) for n in nodes])
        return
    table(None, ["node", "mac", "ip", "groups"],
          [(n.name, ", ".join(map(str, n.macs)), n.address, ", ".join(n.groups)) for n in nodes])


def resolved_json(r: ResolvedNode) -> dict[str, Any]:
    return {
        **_node_row(r.node),
        "values": {k: {"value": list(v) if isinstance(v, tuple) else v,
                       "from": r.provenance[k]} for k, v in r.values.items()},
    }


@node.command("show")
@click.argument("name")
@json_option
@pass_state
def node_show(state: State, name: str, as_json: bool) -> None:
    """Show a node's values and where each came from."""
    cluster = state.cluster()
    r = cluster.node(name)
    n = r.node
    spec = boot_ops.root_spec_text(cluster, r)
    if as_json:
        emit_json({**resolved_json(r), "root": spec})
        return
    table(f"node {n.name}", ["", ""], [
        ("macs", ", ".join(map(str, n.macs))), ("ip", n.address),
        ("groups", ", ".join(n.groups)), ("root=", spec)])
    console.print()
    table(None, ["setting", "value", "from"],
          [(k, value_text(v), r.provenance[k]) for k, v in r.values.items()])


@node.command("set")
@click.argument("pattern")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE")
@click.option("--unset", multiple=True, metavar="KEY", help="Drop an override.")
@click.option("--mac", "macs", multiple=True)
@click.option("--ip", default=None)
@click.option("--groups", default=None, help="Replace the group list (comma separated).")
@click.option("--description", default=None)
@pass_state
def node_set(state: State, pattern: str, sets: tuple[str, ...], unset: tuple[str, ...],
             macs: tuple[str, ...], ip: str | None, groups: str | None,
             description: str | None) -> None:
    """Change node(s) PATTERN (a name or a range)."""
    overrides = inv_ops.parse_overrides(sets)
    for key in unset:
        if key not in PROFILE_KEYS:
            raise InvalidValue(f"unknown setting {key!r}",
                               hint=f"known: {', '.join(sorted(PROFILE_KEYS))}")
    mac_list = inv_ops.read_macs(macs, None) if macs else None
    group_list = [g.strip() for g in groups.split(",") if g.strip()] if groups else None
    with state.store() as store:
        before = store.load()
        changes = inv_ops.set_node(
            store, pattern, overrides=overrides, unset=unset, macs=mac_list,
            address=parse_ipv4(ip) if ip else None, groups=group_list,
            description=description)
        record_hand_pins(state.paths, before, store.load(), who=operator())
    show_changes(changes)


@node.command("rm")
@click.argument("pattern")
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
@pass_state
@click.option("--keep-dir", is_flag=True, help="Leave the node's directory where it is.")
def node_rm(state: State, pattern: str, yes: bool, keep_dir: bool) -> None:
    """Remove node(s): the inventory entry, exports and boot files; the node's directory is
    archived under HOME/archive (never deleted silently)."""
    if not yes and sys.stdin.isatty():
        click.confirm(f"remove {pattern}?", abort=True)
    with state.store() as store:
        for step in remove_nodes(store, state.paths, pattern, keep_dir=keep_dir):
            match step:
                case NodesRemoved(changes=changes):
                    show_changes(changes)
                case NodeDirArchived(node=name, archive=archive):
                    console.print(f"archived {name}'s directory to {archive}")
                case NodeMustReboot(reboot=item):
                    console.print(plain(f"warning: {item.message}"))


@node.command("reboot")
@click.argument("nodes", nargs=-1, required=True)
@click.option("--pxe", is_flag=True, help="Boot from the network at this reboot.")
@parallel_option
@json_option
@pass_state
def node_reboot(state: State, nodes: tuple[str, ...], pxe: bool, parallel: int,
                as_json: bool) -> None:
    """Power-cycle NODES through their BMCs (a node that is off is powered on)."""
    run_power(state, nodes, PowerAction.CYCLE, pxe=pxe, parallel=parallel, as_json=as_json)


@node.command("unknown")
@json_option
@pass_state
def node_unknown(state: State, as_json: bool) -> None:
    """Machines DHCP saw that are not in the inventory (discovery)."""
    clients = lease_ops.unknown_clients(state.paths)
    if as_json:
        emit_json([c.as_json() for c in clients])
        return
    table(None, ["mac", "address", "arch", "vendor class", "first seen", "last seen"],
          [(str(c.mac), str(c.address) if c.address is not None else None, c.arch,
            c.vendor_class, c.first_seen_text, c.last_seen_text) for c in clients])
