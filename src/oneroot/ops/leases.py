"""Lease and discovery use-cases: machines DHCP saw that the inventory does not know."""

from __future__ import annotations

import datetime
from typing import Any

from oneroot.inventory.leases import LeaseStore
from oneroot.model.paths import Paths
from oneroot.net import MacAddress


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).isoformat(timespec="seconds")


def unknown_clients(paths: Paths) -> list[dict[str, Any]]:
    if not paths.leases_db.exists():
        return []
    store = LeaseStore(paths.leases_db)
    try:
        rows = []
        for c in store.unknown_clients():
            lease = store.lease_for_mac(c.mac)
            rows.append({"mac": str(c.mac), "address": str(lease.address) if lease else None,
                         "arch": c.arch, "vendor_class": c.vendor_class,
                         "first_seen": _when(c.first_seen), "last_seen": _when(c.last_seen)})
        return rows
    finally:
        store.close()


def unknown_address(paths: Paths, mac: MacAddress) -> str | None:
    """The pool address a discovered machine holds, so adopting it keeps its address."""
    if not paths.leases_db.exists():
        return None
    store = LeaseStore(paths.leases_db)
    try:
        lease = store.lease_for_mac(mac)
        return str(lease.address) if lease else None
    finally:
        store.close()


def forget_unknown(paths: Paths, mac: MacAddress) -> None:
    if not paths.leases_db.exists():
        return
    store = LeaseStore(paths.leases_db)
    try:
        store.forget_unknown(mac)
    finally:
        store.close()
