"""`oneroot power on|off|cycle|reset|status NODES`: node power through their BMCs (IPMI or
Redfish, per node)."""

from __future__ import annotations

import contextlib

import click

from oneroot.cli.output import console, emit_json, plain, table
from oneroot.cli.state import State, json_option, pass_state
from oneroot.ops import power as power_ops
from oneroot.ops.power import DEFAULT_PARALLEL, PowerAction, PowerResult

parallel_option = click.option(
    "--parallel", type=click.IntRange(min=1), default=DEFAULT_PARALLEL, show_default=True,
    help="BMC sessions in flight at once.")


def run_power(state: State, patterns: tuple[str, ...], action: PowerAction, *, pxe: bool,
              parallel: int, as_json: bool) -> None:
    """Shared by `oneroot power` and `oneroot node reboot`: act, show one row a node."""
    cluster = state.cluster()
    status = console.status(f"power {action.value}…")
    with contextlib.nullcontext() if as_json else status:
        results = power_ops.power(cluster, patterns, action, pxe=pxe, parallel=parallel,
                                  record=power_ops.store_recorder(state.paths))
    if as_json:
        emit_json([r.as_json() for r in results])
    else:
        show(results)
    power_ops.raise_for_failures(results)


def show(results: list[PowerResult]) -> None:
    table(None, ["node", "bmc", "action", "power", "result"],
          [(r.node, r.bmc or "-", r.action.value, r.state.value if r.state else "-",
            "ok" if r.ok else plain(f"error: {r.error}", "red")) for r in results])


@click.command()
@click.argument("action", type=click.Choice([a.value for a in PowerAction]))
@click.argument("nodes", nargs=-1, required=True)
@click.option("--pxe", is_flag=True, help="Boot from the network once (with on/cycle/reset).")
@parallel_option
@json_option
@pass_state
def power(state: State, action: str, nodes: tuple[str, ...], pxe: bool, parallel: int,
              as_json: bool) -> None:
    """Power nodes on or off, cycle or reset them, or read their power state.

    NODES are names or ranges (`node[01-64]`). Each node's BMC comes from its profile
    (bmc_protocol, bmc_address, bmc_user, bmc_password_file), usually set on its group."""
    run_power(state, nodes, PowerAction(action), pxe=pxe, parallel=parallel, as_json=as_json)

