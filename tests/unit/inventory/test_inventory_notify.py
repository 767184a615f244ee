"""Inventory changes pushed to other connections on PostgreSQL (LISTEN/NOTIFY); SQLite says it
has no push, and its readers watch the file."""

from __future__ import annotations

import time

from oneroot.inventory.sqlstore import SqlInventory
from oneroot.model.inventory import Inventory, plan
from oneroot.testing.inventory import make_inventory, make_node
from oneroot.testing.postgres import StoreAt


def test_a_change_reaches_every_listener_within_a_second(store_at: StoreAt) -> None:
    writer, reader = SqlInventory(store_at("inventory")), SqlInventory(store_at("inventory"))
    pushed = reader.watch()
    assert pushed == (writer.database.dialect == "postgresql")
    assert reader.changes_seen() == 0
    start = time.monotonic()
    writer.apply(plan(Inventory(), make_inventory(nodes=[make_node(1)])))
    seen = 0
    # PostgreSQL delivers the NOTIFY asynchronously: a bound for a loaded machine, not 1 s
    while pushed and not seen and time.monotonic() - start < 30.0:
        seen = reader.changes_seen()
        time.sleep(0.01)
    assert seen == (1 if pushed else 0)
    assert reader.changes_seen() == 0  # each notification is counted once
    assert "node01" in reader.load().nodes
    writer.close()
    reader.close()
