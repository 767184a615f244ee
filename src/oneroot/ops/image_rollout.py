"""`image rollout NAME@N --to GROUP`: canary nodes pinned and power-cycled first, and they must
reach their runlevel on the new version; then the group is pinned and the rest follow in
batches. It stops at the first node that fails, saying which and at which stage.

`lab try` (a VM boot of the first canary's exact configuration, `ops.lab_try`) runs before
this, in the CLI: `check_rollout` says which node it copies, and a failed try stops the
rollout before any node is pinned or rebooted (`stopped_before_reboot` records it)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from oneroot.errors import InvalidValue
from oneroot.inventory.store import InventoryStore
from oneroot.model.paths import Paths
from oneroot.model.resolved import ResolvedCluster
from oneroot.ops.image_versions import booted_versions, pin_group, pin_node, resolve_version
from oneroot.ops.inventory import commit, get_node
from oneroot.ops.pin_history import PinRecord, append_record, channel_version
from oneroot.ops.rollout import DEFAULT_BATCH, Cycle, group_nodes, plan_batches, reboot_batch
from oneroot.ops.runlevel_watch import NodeFailure, Watch


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutResult:
    record: PinRecord
    batches: list[list[str]]
    failed: NodeFailure | None = None

    def as_json(self) -> dict[str, object]:
        return {**self.record.as_json(), "batches": self.batches,
                "failed": self.failed.as_json() if self.failed else None}


def check_rollout(cluster: ResolvedCluster, ref: str, group: str, *, canary: int = 1,
                  batch: int = DEFAULT_BATCH) -> tuple[str, str]:
    """(the version `ref` names, the node whose configuration `lab try` boots: the first
    canary, or the first node without canaries); refuses what `rollout` would refuse."""
    nodes = group_nodes(cluster, group)
    target = _target(cluster, ref, group)
    if not nodes:
        raise InvalidValue(f"group {group} has no nodes", hint=f"oneroot node add … "
                                                              f"--group {group}")
    return target, plan_batches(nodes, batch=batch, canary=canary)[0][0]


def stopped_before_reboot(paths: Paths, cluster: ResolvedCluster, group: str, target: str,
                          *, who: str, reason: str) -> PinRecord:
    """The record of a rollout stopped before any node was pinned or rebooted."""
    old = str(cluster.groups[group].values.get("image", ""))
    record = PinRecord(group=group, action="rollout-stopped", who=who, when=time.time(),
                       old=old, new=target,
                       nodes={n: reason for n in group_nodes(cluster, group)})
    append_record(paths, record)
    return record


def restore_node_pin(store: InventoryStore, node: str, old: str) -> None:
    """Node `node`'s image override back to `old` ("" = none: it follows its groups)."""
    inv = store.load()
    n = get_node(inv, node)
    overrides = {k: v for k, v in n.overrides.items() if k != "image"}
    if old:
        overrides["image"] = old
    commit(store, inv.replace(nodes={**inv.nodes, node: dataclasses.replace(
        n, overrides=overrides)}))


def _target(cluster: ResolvedCluster, ref: str, group: str) -> str:
    image, version = resolve_version(cluster.inventory, ref)
    if image.live:
        raise InvalidValue(f"image {image.name} is the server's live `/`: it has no versions "
                           "to roll out", hint="make one with `oneroot image exec`")
    target = f"{image.name}@{version.number}"
    pin_group_value = str(cluster.groups[group].values.get("image", "")) \
        if group in cluster.groups else ""
    if pin_group_value == target:
        raise InvalidValue(f"group {group} is already pinned to {target}",
                           hint=f"`oneroot power cycle --pxe` its nodes, or "
                                f"`oneroot image rollback {group}`")
    return target


def rollout(store: InventoryStore, paths: Paths, cluster: ResolvedCluster, ref: str,
            group: str, *, who: str, cycle: Cycle, watch: Watch, canary: int = 1,
            batch: int = DEFAULT_BATCH) -> RolloutResult:
    """Roll `ref` out to `group`, batch by batch; stop at the first node that fails."""
    target, _ = check_rollout(cluster, ref, group, canary=canary, batch=batch)
    nodes = group_nodes(cluster, group)
    batches = plan_batches(nodes, batch=batch, canary=canary)
    old = str(cluster.groups[group].values.get("image", ""))
    ran_before = channel_version(cluster, group, old, booted_versions(paths))  # before reboots
    canaries = {n: pin_node(store, n, target) for n in batches[0]} if canary else {}
    outcome = {n: "not rebooted" for n in nodes}
    failed, pinned = None, False
    for names in batches:
        if not pinned and not set(names) <= set(canaries):
            pin_group(store, group, target)
            pinned = True
            for n, was in canaries.items():  # the group's pin carries them now
                restore_node_pin(store, n, was)
        failed = reboot_batch(cluster, {n: target for n in names}, cycle, watch, outcome,
                              stopped="the rollout stopped")
        if failed is not None:
            break
    if failed is not None and not pinned:
        for n, was in canaries.items():  # their next boot goes back to what they had
            restore_node_pin(store, n, was)
    elif not pinned:  # only canaries, and they all made it
        pin_group(store, group, target)
        pinned = True
        for n, was in canaries.items():
            restore_node_pin(store, n, was)
    record = PinRecord(group=group, action="rollout" if pinned else "rollout-stopped",
                       who=who, when=time.time(), old=old, new=target, nodes=outcome,
                       old_version=ran_before)
    append_record(paths, record)
    return RolloutResult(record=record, batches=batches, failed=failed)
