"""Lease and discovery use-cases: machines DHCP saw that the inventory does not know."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from typing import Any

from oneroot.inventory import database
from oneroot.inventory.leases import LeaseStore
from oneroot.model.paths import Paths
from oneroot.net import MacAddress


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownClient:
    """A machine DHCP saw that the inventory does not know, and the pool address it holds."""

    mac: MacAddress
    address: ipaddress.IPv4Address | None
    arch: int | None
    vendor_class: str | None
    first_seen: float
    last_seen: float

    @property
    def first_seen_text(self) -> str:
        return _when(self.first_seen)

    @property
    def last_seen_text(self) -> str:
        return _when(self.last_seen)

    def as_json(self) -> dict[str, Any]:
        """One row of `oneroot node discovered --json`."""
        return {"mac": str(self.mac),
                "address": str(self.address) if self.address is not None else None,
                "arch": self.arch, "vendor_class": self.vendor_class,
                "first_seen": self.first_seen_text, "last_seen": self.last_seen_text}


def unknown_clients(paths: Paths) -> list[UnknownClient]:
    if not database.exists(paths, paths.leases_db):
        return []
    store = LeaseStore(database.locate(paths, paths.leases_db))
    try:
        rows = []
        for c in store.unknown_clients():
            lease = store.lease_for_mac(c.mac)
            rows.append(UnknownClient(mac=c.mac, address=lease.address if lease else None,
                                      arch=c.arch, vendor_class=c.vendor_class,
                                      first_seen=c.first_seen, last_seen=c.last_seen))
        return rows
    finally:
        store.close()


def unknown_address(paths: Paths, mac: MacAddress) -> str | None:
    """The pool address a discovered machine holds, so adopting it keeps its address."""
    if not database.exists(paths, paths.leases_db):
        return None
    store = LeaseStore(database.locate(paths, paths.leases_db))
    try:
        lease = store.lease_for_mac(mac)
        return str(lease.address) if lease else None
    finally:
        store.close()


def forget_unknown(paths: Paths, mac: MacAddress) -> None:
    if not database.exists(paths, paths.leases_db):
        return
    store = LeaseStore(database.locate(paths, paths.leases_db))
    try:
        store.forget_unknown(mac)
    finally:
        store.close()
