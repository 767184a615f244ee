"""Each node's boot progress, from the boot events (for `oneroot status` and the HTTP API)."""

from __future__ import annotations

import time
from typing import Any

from oneroot.inventory.events import EventStore
from oneroot.model.inventory import Inventory
from oneroot.model.paths import Paths
from oneroot.ops.health import read_health


def status_document(inv: Inventory, events: EventStore, *, now: float | None = None
                    ) -> dict[str, Any]:
    now = time.time() if now is None else now
    latest = events.status()
    nodes = []
    for name, node in sorted(inv.nodes.items()):
        st = latest.get(name)
        nodes.append({
            "node": name,
            "ip": str(node.address),
            "stage": st.stage if st else "never booted",
            "time": st.time if st else None,
            "age_seconds": round(now - st.time, 1) if st else None,
            "detail": st.detail if st else {},
        })
    return {"time": now, "nodes": nodes}


def read_status(paths: Paths, inv: Inventory) -> dict[str, Any]:
    """The status document from a connection of its own (safe beside the event writer)."""
    events = EventStore(paths.events_db)
    try:
        doc = status_document(inv, events)
    finally:
        events.close()
    doc["server"] = read_health(paths)
    return doc
