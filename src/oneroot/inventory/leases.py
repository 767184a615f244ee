"""The DHCP lease database: leases, unknown clients seen, declined addresses (SQLite, WAL).

The store keeps every row in memory too (one process owns the file), so the responder's reads
cost no query. Writes go through `stage()`; `commit()` makes them durable. The DHCP service
commits before it sends the ACKs of a batch: several changes share one commit (group commit).
Offers are kept in memory only: an offer lost in a crash costs the client one more DISCOVER.

Schema versions live in `PRAGMA user_version`; `_MIGRATIONS[n]` brings version n to n + 1.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Literal

from oneroot.net import MacAddress
from oneroot.proto.dhcp import Lease, LeaseAction, LeaseChange, LeaseState, UnknownClient

Synchronous = Literal["OFF", "NORMAL", "FULL"]

_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE leases (
        mac     TEXT PRIMARY KEY,
        ip      TEXT NOT NULL UNIQUE,
        node    TEXT,
        expires REAL NOT NULL,
        state   TEXT NOT NULL
    );
    CREATE TABLE unknown_clients (
        mac          TEXT PRIMARY KEY,
        first_seen   REAL NOT NULL,
        last_seen    REAL NOT NULL,
        arch         INTEGER,
        vendor_class TEXT
    );
    CREATE TABLE declined (
        ip    TEXT PRIMARY KEY,
        mac   TEXT NOT NULL,
        until REAL NOT NULL
    );
    """,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownClientRecord:
    mac: MacAddress
    first_seen: float
    last_seen: float
    arch: int | None
    vendor_class: str | None


class LeaseStore:
    """Leases on SQLite at `path` (created if missing). `synchronous="FULL"` fsyncs the WAL at
    every commit (survives power loss); `"NORMAL"` survives a killed process, not power loss."""

    def __init__(self, path: Path, *, synchronous: Synchronous = "FULL") -> None:
        self.path = path
        self.synchronous = synchronous
        # The DHCP service commits from a worker thread, one call at a time.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._migrate()
        self._by_mac: dict[MacAddress, Lease] = {}
        self._by_address: dict[IPv4Address, Lease] = {}
        self._declined: dict[IPv4Address, float] = {}
        self._in_transaction = False
        self._load()

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        for number in range(version, len(_MIGRATIONS)):
            self._db.execute("BEGIN IMMEDIATE")
            for statement in _MIGRATIONS[number].split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version={number + 1}")
            self._db.execute("COMMIT")

    def _load(self) -> None:
        for mac, ip, node, expires, state in self._db.execute(
                "SELECT mac, ip, node, expires, state FROM leases"):
            lease = Lease(mac=MacAddress.parse(mac), address=IPv4Address(ip), node=node,
                          expires=expires, state=LeaseState[state])
            self._remember(lease)
        for ip, until in self._db.execute("SELECT ip, until FROM declined"):
            self._declined[IPv4Address(ip)] = until

    def close(self) -> None:
        if self._in_transaction:
            self.commit()
        self._db.close()

    # --- the responder's view (LeaseView) ---

    def lease_for_mac(self, mac: MacAddress) -> Lease | None:
        return self._by_mac.get(mac)

    def lease_for_address(self, address: IPv4Address) -> Lease | None:
        return self._by_address.get(address)

    def is_declined(self, address: IPv4Address, now: float) -> bool:
        until = self._declined.get(address)
        return until is not None and until > now

    # --- writes ---

    def stage(self, change: LeaseChange) -> None:
        """Apply `change` to the view now and to the database in the open transaction."""
        if change.action is LeaseAction.BIND:
            lease = Lease(mac=change.mac, address=change.address, node=change.node,
                          expires=change.expires, state=change.state)
            previous = self._by_mac.get(change.mac)
            holder = self._by_address.get(change.address)
            self._forget(previous)
            if holder is not None and holder.mac != change.mac:
                self._forget(holder)
                if holder.state is LeaseState.BOUND:
                    self._execute("DELETE FROM leases WHERE mac = ?", (str(holder.mac),))
            self._remember(lease)
            if change.state is LeaseState.BOUND:
                self._execute(
                    "INSERT OR REPLACE INTO leases (mac, ip, node, expires, state) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (str(change.mac), str(change.address), change.node, change.expires,
                     change.state.name))
            elif previous is not None and previous.state is LeaseState.BOUND:
                # an offer replacing a bound lease: the old row must not come back at restart
                self._execute("DELETE FROM leases WHERE mac = ?", (str(change.mac),))
        elif change.action is LeaseAction.RELEASE:
            held = self._by_mac.get(change.mac)
            if held is not None and held.address == change.address:
                self._forget(held)
                if held.state is LeaseState.BOUND:
                    self._execute("DELETE FROM leases WHERE mac = ?", (str(change.mac),))
        else:  # DECLINE
            taken = self._by_address.get(change.address)
            if taken is not None:
                self._forget(taken)
                self._execute("DELETE FROM leases WHERE mac = ?", (str(taken.mac),))
            self._declined[change.address] = change.expires
            self._execute("INSERT OR REPLACE INTO declined (ip, mac, until) VALUES (?, ?, ?)",
                          (str(change.address), str(change.mac), change.expires))

    def record_unknown(self, client: UnknownClient, now: float) -> None:
        """Remember a client no node has (staged; committed with the next commit)."""
        self._execute(
            "INSERT INTO unknown_clients (mac, first_seen, last_seen, arch, vendor_class) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (mac) DO UPDATE SET last_seen = excluded.last_seen,"
            " arch = coalesce(excluded.arch, arch),"
            " vendor_class = coalesce(excluded.vendor_class, vendor_class)",
            (str(client.mac), now, now, client.arch, client.vendor_class))

    def apply(self, change: LeaseChange) -> None:
        """Stage and commit one change."""
        self.stage(change)
        self.commit()

    @property
    def dirty(self) -> bool:
        return self._in_transaction

    def commit(self) -> None:
        if self._in_transaction:
            self._db.execute("COMMIT")
            self._in_transaction = False

    def rollback(self) -> None:
        """Undo the open transaction, and the view with it (reloaded from the database)."""
        if self._in_transaction:
            self._db.execute("ROLLBACK")
            self._in_transaction = False
        self._by_mac.clear()
        self._by_address.clear()
        self._declined.clear()
        self._load()

    def _execute(self, sql: str, params: tuple[object, ...]) -> None:
        if not self._in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
            self._in_transaction = True
        self._db.execute(sql, params)

    def _remember(self, lease: Lease) -> None:
        self._by_mac[lease.mac] = lease
        self._by_address[lease.address] = lease

    def _forget(self, lease: Lease | None) -> None:
        if lease is None:
            return
        if self._by_mac.get(lease.mac) == lease:
            del self._by_mac[lease.mac]
        if self._by_address.get(lease.address) == lease:
            del self._by_address[lease.address]

    # --- what the CLI lists ---

    def leases(self) -> list[Lease]:
        """Bound leases (offers are not listed), by address."""
        return sorted((lease for lease in self._by_mac.values()
                       if lease.state is LeaseState.BOUND), key=lambda lease: lease.address)

    def unknown_clients(self) -> list[UnknownClientRecord]:
        self.commit()
        return [
            UnknownClientRecord(mac=MacAddress.parse(mac), first_seen=first, last_seen=last,
                                arch=arch, vendor_class=vendor)
            for mac, first, last, arch, vendor in self._db.execute(
                "SELECT mac, first_seen, last_seen, arch, vendor_class FROM unknown_clients "
                "ORDER BY first_seen, mac")
        ]

    def forget_unknown(self, mac: MacAddress) -> bool:
        """Drop `mac` from the unknown clients (adopted as a node, or noise). True if it was
        there."""
        self._execute("DELETE FROM unknown_clients WHERE mac = ?", (str(mac),))
        changed = self._db.execute("SELECT changes()").fetchone()[0]
        self.commit()
        return bool(changed)
