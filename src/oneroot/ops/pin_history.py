"""The history of image pins, made by `image rollout`/`image rollback` or by hand (`group
set`/`node set` changing `image`): who, when, from which value to which, and each node's
outcome. An append-only JSON-lines file in
oneroot's home, each record written whole and fsynced, so a crash loses at most the record
being written and never an earlier one."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from oneroot.errors import InvalidValue
from oneroot.fsutil import fsync_path
from oneroot.model.inventory import Inventory
from oneroot.model.paths import Paths
from oneroot.model.resolved import ResolvedCluster, resolve_cluster
from oneroot.ops.image_versions import booted_versions

MAX_HISTORY_BYTES = 16 * 1024 * 1024  # a bigger file is not ours: refuse to read it whole


@dataclass(frozen=True, slots=True, kw_only=True)
class PinRecord:
    group: str  # "" for a node's own pin
    action: str  # "rollout" | "rollout-stopped" (before the group was pinned) | "rollback"
    # | "pin" (by hand)
    who: str
    when: float
    old: str  # the group's pin before ("" = it set none)
    new: str
    nodes: Mapping[str, str] = field(default_factory=dict)  # node → outcome
    node: str = ""  # a node's own pin (`node set NODE --set image=…`): group is ""
    # A rollout from a pin that follows a channel (`lab`, or none): the version (`lab@1`) it
    # named then. A rollback returns there: the channel may name a newer (broken) one now.
    old_version: str = ""

    def as_json(self) -> dict[str, object]:
        return {"group": self.group, "action": self.action, "who": self.who,
                "when": self.when, "from": self.old, "to": self.new, "nodes": dict(self.nodes),
                **({"node": self.node} if self.node else {}),
                **({"from_version": self.old_version} if self.old_version else {})}

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> PinRecord:
        nodes = d.get("nodes") or {}
        return cls(group=str(d["group"]), action=str(d["action"]), who=str(d.get("who", "")),
                   when=float(d.get("when", 0.0)),  # type: ignore[arg-type]
                   old=str(d.get("from", "")), new=str(d["to"]),
                   nodes={str(k): str(v) for k, v in dict(nodes).items()},  # type: ignore[call-overload]
                   node=str(d.get("node", "")), old_version=str(d.get("from_version", "")))


def history_file(paths: Paths) -> Path:
    return paths.home / "pin-history.jsonl"


def append_record(paths: Paths, record: PinRecord) -> None:
    """Append one record as one line and fsync it (and the directory the first time)."""
    path = history_file(paths)
    line = (json.dumps(record.as_json(), sort_keys=True) + "\n").encode()
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_path(path.parent, directory=True)


def read_history(paths: Paths) -> list[PinRecord]:
    """Every record, oldest first. A torn last line (a crash mid-write) is ignored."""
    path = history_file(paths)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return []
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_HISTORY_BYTES + 1)
    if len(data) > MAX_HISTORY_BYTES:
        raise InvalidValue(f"{path} is over {MAX_HISTORY_BYTES} bytes",
                           hint="move it aside; oneroot starts a new history")
    records = []
    for line in data.splitlines():
        try:
            records.append(PinRecord.from_json(json.loads(line)))
        except (ValueError, KeyError, TypeError):
            continue
    return records


def previous_pin(records: Iterable[PinRecord], group: str) -> tuple[str, str] | None:
    """(the pin a rollback of `group` returns to ("": none, it follows its defaults), the pin
    it undoes), or None when there is nothing to return to.
    Rollouts and pins by hand push, rollbacks pop: two rollbacks go back two of them."""
    record = previous_record(records, group)
    return None if record is None else (record.old, record.new)


def previous_record(records: Iterable[PinRecord], group: str) -> PinRecord | None:
    """The record a rollback of `group` undoes (see `previous_pin`)."""
    stack: list[PinRecord] = []
    for r in records:
        if r.group != group or r.node:
            continue
        if r.action == "rollback":
            if stack:
                stack.pop()
        elif r.action in ("rollout", "pin"):  # a "rollout-stopped" never pinned the group
            stack.append(r)
    return stack[-1] if stack else None


def channel_version(cluster: ResolvedCluster, group: str, old: str,
                    booted: Mapping[str, str]) -> str:
    """For a pin that follows a channel (`lab`, or none): the version the group's first node
    ran before the rollout (its boot events; `lab` booted before versions is `lab@1`), else
    the one the channel named then; "" for a pin to a version or an unversioned image."""
    nodes = [name for name, r in cluster.nodes.items() if group in r.node.groups]
    if "@" in old or not nodes:
        return ""
    image = cluster.nodes[nodes[0]].image
    if image.version is None:
        return ""
    ran = booted.get(nodes[0], "")
    if ran.partition("@")[0] == image.name:
        return ran if "@" in ran else f"{ran}@1"
    return image.ref


def record_hand_pins(paths: Paths, before: Inventory, after: Inventory, *,
                     who: str) -> list[PinRecord]:
    """One "pin" record per group and node whose `image` differs from `before` to `after`
    (a `group set`/`node set` made by hand; a `group add`/`node add` or an `inventory apply`
    that adds one with an image: from "", no pin), appended to the history. A group or node
    removed is not a pin."""
    def image(values: Mapping[str, object] | None) -> str:
        return str(values.get("image", "")) if values is not None else ""

    def group_values(name: str) -> Mapping[str, object] | None:
        g = before.groups.get(name)
        return g.values if g is not None else None

    def node_values(name: str) -> Mapping[str, object] | None:
        n = before.nodes.get(name)
        return n.overrides if n is not None else None

    records = [PinRecord(group=name, action="pin", who=who, when=time.time(),
                         old=image(group_values(name)), new=image(g.values))
               for name, g in sorted(after.groups.items())
               if image(group_values(name)) != image(g.values)]
    if any("@" not in r.old and r.group in before.groups for r in records):
        # a pin moved off a channel: a rollback returns to the version it ran (as a rollout's)
        ran, booted = resolve_cluster(before), booted_versions(paths)
        records = [dataclasses.replace(r, old_version=channel_version(ran, r.group, r.old,
                                                                      booted))
                   if r.group in before.groups else r for r in records]
    records += [PinRecord(group="", node=name, action="pin", who=who, when=time.time(),
                          old=image(node_values(name)), new=image(n.overrides))
                for name, n in sorted(after.nodes.items())
                if image(node_values(name)) != image(n.overrides)]
    try:
        for r in records:
            append_record(paths, r)
    except OSError as exc:  # a symlink planted there (no-follow), a full disk…
        raise InvalidValue(f"the image pin is made but not recorded in "
                           f"{history_file(paths)}: {exc.strerror or exc}",
                           hint="move that file aside (it must be a regular file); a later "
                                "`image rollback` refuses an unrecorded pin") from exc
    return records
