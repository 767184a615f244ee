"""`image rollback` (and the batch planning and rebooting `image rollout` shares): re-pin a
group, record it in the pin history, and power-cycle its nodes batch by batch through their
BMCs, each batch reaching its runlevel on the version it was moved to before the next one."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from oneroot.errors import ConfigError, InvalidValue
from oneroot.inventory.store import InventoryStore
from oneroot.model.paths import Paths
from oneroot.model.resolved import ResolvedCluster, resolve_cluster
from oneroot.ops import power as power_ops
from oneroot.ops.image_versions import pin_group
from oneroot.ops.inventory import commit, get_group
from oneroot.ops.pin_history import PinRecord, append_record, previous_record, read_history
from oneroot.ops.power import PowerAction, PowerResult
from oneroot.ops.runlevel_watch import NodeFailure, Watch

DEFAULT_BATCH = 8
Cycle = Callable[[ResolvedCluster, tuple[str, ...]], list[PowerResult]]


def plan_batches(nodes: Sequence[str], *, batch: int, canary: int = 0) -> list[list[str]]:
    """The nodes in reboot order: the first `canary` alone as one batch, then the rest in
    batches of at most `batch`, in the order given."""
    if batch < 1:
        raise InvalidValue(f"--batch must be at least 1, not {batch}", hint="--batch 1")
    if canary < 0 or (nodes and canary > len(nodes)):
        raise InvalidValue(f"--canary {canary}: the group has {len(nodes)} nodes",
                           hint=f"--canary between 0 and {len(nodes)}")
    plan = [list(nodes[:canary])] if canary else []
    rest = list(nodes[canary:])
    plan += [rest[i:i + batch] for i in range(0, len(rest), batch)]
    return plan


def group_nodes(cluster: ResolvedCluster, group: str) -> list[str]:
    if group not in cluster.groups:
        raise ConfigError(f"no group named {group!r}", hint="see `oneroot group list`")
    return [name for name, r in cluster.nodes.items() if group in r.node.groups]


def bmc_cycle(paths: Paths) -> Cycle:
    """Power-cycle nodes with a one-time network boot, recording the stage in the events.
    A BMC without a boot device option (the lab's) still cycles: oneroot's nodes network-boot,
    and the watch fails a node that came back on another version."""
    def cycle(cluster: ResolvedCluster, names: tuple[str, ...]) -> list[PowerResult]:
        return power_ops.power(cluster, names, PowerAction.CYCLE, pxe=True,
                               pxe_required=False, record=power_ops.store_recorder(paths))
    return cycle


@dataclass(frozen=True, slots=True, kw_only=True)
class RollbackResult:
    record: PinRecord
    batches: list[list[str]]
    failed: NodeFailure | None = None  # the first node whose reboot failed: the rest wait

    def as_json(self) -> dict[str, object]:
        return {**self.record.as_json(), "batches": self.batches,
                "failed": self.failed.as_json() if self.failed else None}


def rollback(store: InventoryStore, paths: Paths, cluster: ResolvedCluster, group: str, *,
             who: str, batch: int = DEFAULT_BATCH, cycle: Cycle | None = None,
             watch: Watch | None = None) -> RollbackResult:
    """Re-pin `group` to its pin before its last rollout (or pin by hand); `cycle` (None:
    only re-pin) reboots its nodes batch by batch, and `watch` waits for each batch's
    runlevel on the version it was rolled back to; stops at the first node that fails."""
    nodes = group_nodes(cluster, group)
    batches = plan_batches(nodes, batch=batch)
    previous = previous_record(read_history(paths), group)
    current = str(cluster.groups[group].values.get("image", ""))
    if previous is None:
        raise InvalidValue(f"group {group} has no previous image version to roll back to",
                           hint=f"pin one with `oneroot group set {group} --set image=NAME@N`")
    # a rollout from a channel goes back to the version the channel named then
    target, undone = previous.old_version or previous.old, previous.new
    if current != undone:
        raise InvalidValue(f"group {group} is pinned to {current or 'nothing'}, not {undone} "
                           "as its last recorded pin left it",
                           hint=f"pin it by hand: `oneroot group set {group} --set "
                                f"image={target}`")
    old = pin_group(store, group, target) if target else unpin_group(store, group)
    outcome = {n: "re-pinned" for n in nodes}
    failed = None
    if cycle is not None:
        resolved = resolve_cluster(store.load())  # what each node boots now
        for names in batches:
            targets = {n: resolved.nodes[n].image.ref for n in names}
            failed = reboot_batch(cluster, targets, cycle, watch, outcome,
                                  stopped="the rollback stopped")
            if failed is not None:
                break
    record = PinRecord(group=group, action="rollback", who=who, when=time.time(), old=old,
                       new=target, nodes=outcome)
    append_record(paths, record)
    return RollbackResult(record=record, batches=batches, failed=failed)


def reboot_batch(cluster: ResolvedCluster, targets: dict[str, str], cycle: Cycle,
                 watch: Watch | None, outcome: dict[str, str], *,
                 stopped: str) -> NodeFailure | None:
    """Power-cycle the nodes of `targets` at once, then (with `watch`) wait until each reports
    its runlevel on its target version. The first failure, with `outcome` filled in."""
    since = time.time()
    for r in cycle(cluster, tuple(targets)):
        outcome[r.node] = "rebooted" if r.ok else f"reboot failed: {r.error}"
        if not r.ok:
            return NodeFailure(node=r.node, stage="power", running="-",
                               reason=f"its BMC refused the power cycle: {r.error}")
    if watch is None:
        return None
    failed = None
    for target in dict.fromkeys(targets.values()):  # one wait per version, in order
        failed = watch([n for n, t in targets.items() if t == target], target, since)
        if failed is not None:
            break
    for n, target in targets.items():
        outcome[n] = (f"runlevel on {target}" if failed is None
                      else f"rebooted, not confirmed ({stopped})")
    if failed is not None:
        outcome[failed.node] = f"failed at {failed.stage}: {failed.reason}"
    return failed


def unpin_group(store: InventoryStore, group: str) -> str:
    """The group's image pin removed (it follows its defaults again); returns the old one."""
    inv = store.load()
    g = get_group(inv, group)
    values = {k: v for k, v in g.values.items() if k != "image"}
    commit(store, inv.replace(groups={**inv.groups, group: dataclasses.replace(
        g, values=values)}))
    return str(g.values.get("image", ""))


def record_pin(paths: Paths, group: str, *, action: str, who: str, old: str, new: str,
               nodes: dict[str, str]) -> PinRecord:
    record = PinRecord(group=group, action=action, who=who, when=time.time(), old=old,
                       new=new, nodes=nodes)
    append_record(paths, record)
    return record
