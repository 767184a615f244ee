"""`image rollout NAME@N --to GROUP`: canary nodes pinned and power-cycled first, and they must
reach their runlevel on the new version; then the group is pinned and the rest follow in
batches. It stops at the first node that fails, saying which and at which stage.

`lab try` (a VM boot of a node's exact configuration before any real node reboots) is not
built yet: the first check is the real canary node."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from oneroot.errors import InvalidValue
from oneroot.inventory import database
from oneroot.inventory.events import EventStore, NodeStatus
from oneroot.inventory.store import InventoryStore
from oneroot.model.paths import Paths
from oneroot.model.resolved import ResolvedCluster
from oneroot.ops.image_versions import pin_group, pin_node, resolve_version
from oneroot.ops.inventory import commit, get_node
from oneroot.ops.pin_history import PinRecord, append_record
from oneroot.ops.rollout import DEFAULT_BATCH, Cycle, group_nodes, plan_batches

DEFAULT_TIMEOUT = 600.0  # seconds a node may take from its power cycle to its runlevel
POLL = 1.0
RUNLEVEL = "runlevel"
LAB_TRY = "not built yet: the canary is the first real node to boot the version"


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeFailure:
    node: str
    stage: str  # the last stage it reported since its reboot ("-": none)
    running: str  # the version it runs ("-": unknown)
    reason: str

    def as_json(self) -> dict[str, str]:
        return dataclasses.asdict(self)


Watch = Callable[[Sequence[str], str, float], NodeFailure | None]


def observed(paths: Paths) -> tuple[dict[str, NodeStatus], dict[str, str]]:
    """Each node's last stage, and the version it runs (its last boot file's), in one read."""
    if not database.exists(paths, paths.events_db):
        return {}, {}
    events = EventStore(database.locate(paths, paths.events_db))
    try:
        return events.status(), events.booted_images()
    finally:
        events.close()


def _verdict(node: str, status: NodeStatus | None, running: str, target: str,
             since: float) -> NodeFailure | bool | None:
    """True: reached its runlevel on `target`; a failure: reached it on another version;
    None: not there yet."""
    if status is None or status.time < since or status.stage != RUNLEVEL:
        return None
    if running == target:
        return True
    return NodeFailure(node=node, stage=RUNLEVEL, running=running,
                       reason=f"it reached its runlevel on {running}, not {target}")


def runlevel_watch(paths: Paths, *, timeout: float, poll: float = POLL) -> Watch:
    """Wait until every node named reports `runlevel` (newer than `since`) and runs `target`;
    the first that does not within `timeout`, or runs another version, is the failure."""
    def watch(names: Sequence[str], target: str, since: float) -> NodeFailure | None:
        deadline = time.monotonic() + timeout
        pending = list(names)
        while True:
            status, booted = observed(paths)
            still = []
            for n in pending:
                verdict = _verdict(n, status.get(n), booted.get(n, "-"), target, since)
                if isinstance(verdict, NodeFailure):
                    return verdict
                if verdict is None:
                    still.append(n)
            pending = still
            if not pending:
                return None
            if time.monotonic() >= deadline:
                n, s = pending[0], status.get(pending[0])
                last = s.stage if s is not None and s.time >= since else "-"
                return NodeFailure(node=n, stage=last, running=booted.get(n, "-"),
                                   reason=f"no runlevel on {target} within {timeout:g} s")
            time.sleep(poll)
    return watch


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutResult:
    record: PinRecord
    batches: list[list[str]]
    failed: NodeFailure | None = None

    def as_json(self) -> dict[str, object]:
        return {**self.record.as_json(), "batches": self.batches, "lab_try": LAB_TRY,
                "failed": self.failed.as_json() if self.failed else None}


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
    nodes = group_nodes(cluster, group)
    target = _target(cluster, ref, group)
    if not nodes:
        raise InvalidValue(f"group {group} has no nodes", hint=f"oneroot node add … "
                                                              f"--group {group}")
    batches = plan_batches(nodes, batch=batch, canary=canary)
    old = str(cluster.groups[group].values.get("image", ""))
    canaries = {n: pin_node(store, n, target) for n in batches[0]} if canary else {}
    outcome = {n: "not rebooted" for n in nodes}
    failed, pinned = None, False
    for names in batches:
        if not pinned and not set(names) <= set(canaries):
            pin_group(store, group, target)
            pinned = True
            for n, was in canaries.items():  # the group's pin carries them now
                restore_node_pin(store, n, was)
        failed = _reboot(cluster, names, target, cycle, watch, outcome)
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
                       who=who, when=time.time(), old=old, new=target, nodes=outcome)
    append_record(paths, record)
    return RolloutResult(record=record, batches=batches, failed=failed)


def _reboot(cluster: ResolvedCluster, names: list[str], target: str, cycle: Cycle,
            watch: Watch, outcome: dict[str, str]) -> NodeFailure | None:
    since = time.time()
    for r in cycle(cluster, tuple(names)):
        outcome[r.node] = "rebooting" if r.ok else f"reboot failed: {r.error}"
        if not r.ok:
            return NodeFailure(node=r.node, stage="power", running="-",
                               reason=f"its BMC refused the power cycle: {r.error}")
    failed = watch(names, target, since)
    for n in names:
        outcome[n] = (f"runlevel on {target}" if failed is None
                      else "rebooted, not confirmed (the rollout stopped)")
    if failed is not None:
        outcome[failed.node] = f"failed at {failed.stage}: {failed.reason}"
    return failed
