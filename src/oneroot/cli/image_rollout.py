"""`oneroot image rollback GROUP`: the group back on its previous image version."""

from __future__ import annotations

import os

import click

from oneroot.cli.output import console, emit_json, plain, table
from oneroot.cli.state import State, json_option, pass_state
from oneroot.errors import BmcError
from oneroot.ops.rollout import DEFAULT_BATCH, bmc_cycle, rollback


def operator() -> str:
    """Who asked: the user behind sudo when there is one."""
    return os.environ.get("SUDO_USER") or os.environ.get("USER") or "unknown"


@click.command("rollback")
@click.argument("group")
@click.option("--no-reboot", is_flag=True, help="Only re-pin: nodes change at their next boot.")
@click.option("--batch", type=click.IntRange(min=1), default=DEFAULT_BATCH, show_default=True,
              help="Nodes power-cycled at once.")
@json_option
@pass_state
def image_rollback(state: State, group: str, no_reboot: bool, batch: int,
                   as_json: bool) -> None:
    """Re-pin GROUP to the image version it had before its last rollout, then power-cycle
    its nodes in batches through their BMCs (--no-reboot: only re-pin)."""
    cluster = state.cluster()
    with state.store() as store:
        result = rollback(store, state.paths, cluster, group, who=operator(), batch=batch,
                          cycle=None if no_reboot else bmc_cycle(state.paths))
    r = result.record
    if as_json:
        emit_json(result.as_json())
    else:
        console.print(plain(f"group {group}: {r.old or '-'} → {r.new}"))
        table(None, ["node", "outcome"], sorted(r.nodes.items()))
    if result.failed is not None:
        raise BmcError(f"{result.failed.node}: reboot failed: {result.failed.error}; the "
                       "later batches were not rebooted",
                       hint=result.failed.hint or "fix its BMC, then `oneroot power cycle "
                                                  "--pxe` the nodes still on the old version")
