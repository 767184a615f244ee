"""`oneroot image rollout REF --to GROUP` and `oneroot image rollback GROUP`: a group moved
onto an image version node by node, and back."""

from __future__ import annotations

import click

from oneroot.cli.output import console, emit_json, plain, table
from oneroot.cli.state import State, json_option, operator, pass_state
from oneroot.errors import OnerootError
from oneroot.ops.image_rollout import LAB_TRY, rollout
from oneroot.ops.rollout import DEFAULT_BATCH, bmc_cycle, rollback
from oneroot.ops.runlevel_watch import DEFAULT_TIMEOUT, runlevel_watch

timeout_option = click.option(
    "--timeout", type=click.FloatRange(min=0), default=DEFAULT_TIMEOUT, show_default=True,
    help="Seconds a node may take from its power cycle to its runlevel.")


@click.command("rollback")
@click.argument("group")
@click.option("--no-reboot", is_flag=True, help="Only re-pin: nodes change at their next boot.")
@click.option("--batch", type=click.IntRange(min=1), default=DEFAULT_BATCH, show_default=True,
              help="Nodes power-cycled at once.")
@timeout_option
@json_option
@pass_state
def image_rollback(state: State, group: str, no_reboot: bool, batch: int, timeout: float,
                   as_json: bool) -> None:
    """Re-pin GROUP to the image version it had before its last rollout (or pin by hand),
    then power-cycle its nodes in batches through their BMCs; each batch must reach its
    runlevel on that version before the next (--no-reboot: only re-pin)."""
    cluster = state.cluster()
    with state.store() as store:
        result = rollback(store, state.paths, cluster, group, who=operator(), batch=batch,
                          cycle=None if no_reboot else bmc_cycle(state.paths),
                          watch=runlevel_watch(state.paths, timeout=timeout))
    r = result.record
    if as_json:
        emit_json(result.as_json())
    else:
        console.print(plain(f"group {group}: {r.old or '-'} → {r.new or '- (unpinned)'}"))
        table(None, ["node", "outcome"], sorted(r.nodes.items()))
    f = result.failed
    if f is not None:
        raise OnerootError(
            f"rollback stopped at {f.node}: {f.reason} (last stage: {f.stage}, runs "
            f"{f.running}); the later batches were not rebooted",
            hint=f"the group is pinned to {r.new or 'its defaults'}: fix {f.node}, then "
                 "`oneroot power cycle --pxe` the nodes still on the old version")


@click.command("rollout")
@click.argument("ref")
@click.option("--to", "group", required=True, help="The group to move onto REF.")
@click.option("--canary", type=click.IntRange(min=0), default=1, show_default=True,
              help="Nodes rebooted first, alone; they must reach their runlevel on REF.")
@click.option("--batch", type=click.IntRange(min=1), default=DEFAULT_BATCH, show_default=True,
              help="Nodes power-cycled at once after the canaries.")
@timeout_option
@json_option
@pass_state
def image_rollout(state: State, ref: str, group: str, canary: int, batch: int, timeout: float,
                  as_json: bool) -> None:
    """Move GROUP onto image version REF (`lab@4`): the canary nodes are pinned and
    power-cycled through their BMCs and must reach their runlevel on REF; then the group is
    pinned and the rest follow in batches. Stops at the first node that fails.

    `lab try` (a VM boot of a node's exact configuration first) is not built yet."""
    cluster = state.cluster()
    with state.store() as store:
        result = rollout(store, state.paths, cluster, ref, group, who=operator(),
                         cycle=bmc_cycle(state.paths),
                         watch=runlevel_watch(state.paths, timeout=timeout),
                         canary=canary, batch=batch)
    r = result.record
    if as_json:
        emit_json(result.as_json())
    else:
        console.print(plain(f"note: `lab try` is {LAB_TRY}"))
        console.print(plain(f"group {group}: {r.old or '-'} → {r.new}"
                            + ("" if r.action == "rollout" else " (stopped: not pinned)")))
        table(None, ["node", "outcome"], sorted(r.nodes.items()))
    f = result.failed
    if f is not None:
        raise OnerootError(
            f"rollout stopped at {f.node}: {f.reason} (last stage: {f.stage}, runs "
            f"{f.running})",
            hint=(f"the group stays on {r.old or 'its old image'} and no other node was "
                  "rebooted" if r.action != "rollout" else
                  f"`oneroot image rollback {group}` returns the group to {r.old}"))
