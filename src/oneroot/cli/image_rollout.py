"""`oneroot image rollout REF --to GROUP` and `oneroot image rollback GROUP`: a group moved
onto an image version node by node, and back."""

from __future__ import annotations

import click

from oneroot.cli.lab_try import run_lab_try, show_checks, try_failed
from oneroot.cli.output import console, emit_json, plain, table
from oneroot.cli.state import State, json_option, operator, pass_state
from oneroot.errors import LabError, OnerootError
from oneroot.model.resolved import ResolvedCluster
from oneroot.ops.image_rollout import check_rollout, rollout, stopped_before_reboot
from oneroot.ops.lab_try import TryResult
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
@click.option("--skip-lab-try", is_flag=True,
              help="Do not boot a canary VM of the first canary's configuration first (where "
                   "no lab runs on this server: the real canary is then the first check).")
@json_option
@pass_state
def image_rollout(state: State, ref: str, group: str, canary: int, batch: int, timeout: float,
                  skip_lab_try: bool, as_json: bool) -> None:
    """Move GROUP onto image version REF (`lab@4`): first `lab try` boots a VM with the
    first canary's exact configuration on REF (`--skip-lab-try` skips it); then the canary
    nodes are pinned and power-cycled through their BMCs and must reach their runlevel on
    REF; then the group is pinned and the rest follow in batches. Stops at the first
    failure, saying which node and where."""
    cluster = state.cluster()
    target, first = check_rollout(cluster, ref, group, canary=canary, batch=batch)
    tried = None if skip_lab_try else _lab_try_first(state, cluster, group, target, first,
                                                     timeout=timeout, as_json=as_json)
    with state.store() as store:
        result = rollout(store, state.paths, cluster, ref, group, who=operator(),
                         cycle=bmc_cycle(state.paths),
                         watch=runlevel_watch(state.paths, timeout=timeout,
                                               checks=declared_checks(cluster)),
                         canary=canary, batch=batch)
    r = result.record
    if as_json:
        emit_json({**result.as_json(), "lab_try": tried.as_json() if tried else "skipped"})
    else:
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


def declared_checks(cluster: ResolvedCluster) -> dict[str, tuple[str, ...]]:
    """Each node's declared checks (their texts): a rebooted node must pass them too."""
    return {name: tuple(c.text for c in r.profile.checks)
            for name, r in cluster.nodes.items() if r.profile.checks}


def _lab_try_first(state: State, cluster: ResolvedCluster, group: str, target: str,
                   node: str, *, timeout: float, as_json: bool) -> TryResult:
    """`lab try NODE --image TARGET` on the lab this home belongs to (HOME = WORKDIR/home),
    or, on a real server's home, in a private namespace mirroring its network; a failure
    stops the rollout before any node is pinned or rebooted (recorded)."""
    try:
        tried = run_lab_try(state.paths, state.paths.home.parent, node, image=target,
                            timeout=timeout, quiet=as_json)
    except LabError as exc:
        raise LabError(f"rollout refused: lab try cannot run: {exc.message}",
                       hint="run the rollout on the server where `oneroot serve` runs, or on "
                            "a lab's server (`oneroot lab run image rollout …`), or pass "
                            "--skip-lab-try to go straight to the real canary") from exc
    if not as_json:
        show_checks(tried)
    if not tried.passed:
        stopped_before_reboot(state.paths, cluster, group, target, who=operator(),
                              reason=f"not rebooted: lab try failed at {tried.stage}")
        if as_json:
            emit_json({"group": group, "to": target, "action": "rollout-stopped",
                       "lab_try": tried.as_json()})
        failed = try_failed(tried)
        raise OnerootError(f"rollout stopped before any node: {failed.message}",
                           hint=f"no node was pinned or rebooted; {failed.hint}")
    return tried
