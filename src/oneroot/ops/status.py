"""Each node's boot progress, from the boot events (for `oneroot status` and the HTTP API)."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from oneroot.inventory import database
from oneroot.inventory.events import EventStore
from oneroot.model.paths import Paths
from oneroot.model.resolved import ResolvedCluster
from oneroot.ops.health import read_health


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeBootStatus:
    node: str
    ip: ipaddress.IPv4Address
    stage: str  # the last boot event's stage, or "never booted"
    time: float | None
    age_seconds: float | None
    detail: Mapping[str, str]
    # The image version its last boot file named (it runs it until it reboots), and the one
    # its next boot gets; None when not known (never served a boot file / not resolved).
    image: str | None = None
    next_image: str | None = None

    @property
    def image_text(self) -> str:
        """`lab@2`, `lab@2 → lab@3` (a reboot changes it), `→ lab@3` (never booted)."""
        running, following = self.image or "", self.next_image or ""
        if not following or running == following:
            return running or "-"
        return f"{running} → {following}".strip()
    server: str | None = None  # the server that saw the last stage (several may share a db)

    @property
    def detail_text(self) -> str:
        """The detail a person reads first: the message, else the status."""
        return self.detail.get("message") or self.detail.get("status") or ""

    def as_json(self) -> dict[str, Any]:
        doc = {"node": self.node, "ip": str(self.ip), "stage": self.stage, "time": self.time,
               "age_seconds": self.age_seconds, "detail": self.detail}
        if self.next_image is not None:
            doc |= {"image": self.image, "next_image": self.next_image}
        if self.server is not None:  # servers with ids (several on one database)
            doc["server"] = self.server
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> NodeBootStatus:
        """A node's status as `as_json` wrote it (`oneroot status --json`, e.g. in the lab's
        server VM)."""
        return cls(node=doc["node"], ip=ipaddress.IPv4Address(doc["ip"]), stage=doc["stage"],
                   time=doc.get("time"), age_seconds=doc.get("age_seconds"),
                   detail=doc.get("detail") or {})


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusReport:
    time: float
    nodes: tuple[NodeBootStatus, ...]
    server: Mapping[str, Any] = field(default_factory=dict)  # the running server's health

    def as_json(self) -> dict[str, Any]:
        """The document `oneroot status --json` prints and `/api/v1/status` serves."""
        return {"time": self.time, "nodes": [n.as_json() for n in self.nodes],
                "server": self.server}


def node_statuses(cluster: ResolvedCluster, events: EventStore, *, now: float
                  ) -> tuple[NodeBootStatus, ...]:
    latest = events.status()
    booted = events.booted_images()
    nodes = []
    for name, r in cluster.nodes.items():
        st = latest.get(name)
        nodes.append(NodeBootStatus(
            node=name, ip=r.node.address,
            stage=st.stage if st else "never booted",
            time=st.time if st else None,
            age_seconds=round(now - st.time, 1) if st else None,
            detail=st.detail if st else {},
            image=booted.get(name), next_image=r.image.ref,
            server=st.server if st else None,
        ))
    return tuple(nodes)


def read_status(paths: Paths, cluster: ResolvedCluster, *, now: float | None = None
                ) -> StatusReport:
    """Every node's status from a connection of its own (safe beside the event writer), and
    the running server's health record."""
    now = time.time() if now is None else now
    events = EventStore(database.locate(paths, paths.events_db))
    try:
        nodes = node_statuses(cluster, events, now=now)
    finally:
        events.close()
    return StatusReport(time=now, nodes=nodes, server=read_health(paths))
