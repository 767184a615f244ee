"""The DHCP lease database: leases, unknown clients seen, declined addresses (a SQLite file in
WAL mode, or the home's PostgreSQL database).

The store keeps every row in memory too (one process owns the file), so the responder's reads
cost no query. Writes go through `stage()`, which updates the view and queues the statement;
`commit()` makes the queue durable in one transaction (group commit). The DHCP service takes the
queue with `take_pending()` and hands it to `write()` (in a worker thread when it fsyncs) before
it sends the ACKs whose changes it holds. Offers are kept in memory only: an offer lost in a
crash costs the client one more DISCOVER.

Schema versions: `_MIGRATIONS[dialect][n]` brings version n to n + 1 (`Database.migrate`).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Literal

from oneroot.inventory.database import Location, open_database
from oneroot.net import MacAddress
from oneroot.proto.dhcp import Lease, LeaseAction, LeaseChange, LeaseState, UnknownClient

Synchronous = Literal["OFF", "NORMAL", "FULL"]
Statement = tuple[str, tuple[object, ...]]

# Upserts, not SQLite's INSERT OR REPLACE, so one statement serves both engines. stage() deletes
# the row of an address's previous holder first, so only the MAC can conflict.
_UPSERT_LEASE = ("INSERT INTO leases (mac, ip, node, expires, state, relay_info) "
                 "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (mac) DO UPDATE SET ip = excluded.ip,"
                 " node = excluded.node, expires = excluded.expires, state = excluded.state,"
                 " relay_info = excluded.relay_info")
_DELETE_LEASE = "DELETE FROM leases WHERE mac = ?"
_UPSERT_DECLINED = ("INSERT INTO declined (ip, mac, until) VALUES (?, ?, ?) ON CONFLICT (ip) "
                    "DO UPDATE SET mac = excluded.mac, until = excluded.until")
_UPSERT_UNKNOWN = (
    "INSERT INTO unknown_clients (mac, first_seen, last_seen, arch, vendor_class) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (mac) DO UPDATE SET last_seen = excluded.last_seen,"
    " arch = coalesce(excluded.arch, unknown_clients.arch),"
    " vendor_class = coalesce(excluded.vendor_class, unknown_clients.vendor_class)")

# The claim of a pool address: the row for that address becomes ours only if it is ours
# already or its lease has expired (RETURNING says whether it did).
_CLAIM = ("INSERT INTO leases (mac, ip, node, expires, state, relay_info) "
          "VALUES (?, ?, ?, ?, 'BOUND', NULL) ON CONFLICT (ip) DO UPDATE SET mac = excluded.mac,"
          " node = excluded.node, expires = excluded.expires, state = excluded.state,"
          " relay_info = excluded.relay_info"
          " WHERE leases.mac = excluded.mac OR leases.expires < ? RETURNING mac")
_DELETE_OTHER_LEASES = "DELETE FROM leases WHERE mac = ? AND ip <> ?"
_QUARANTINED = "SELECT 1 FROM declined WHERE ip = ? AND until > ?"
_SELECT_LEASE_AT = "SELECT mac, ip, node, expires, state, relay_info FROM leases WHERE ip = ?"

_DELETE_DECLINED_UNTIL = "DELETE FROM declined WHERE until <= ?"
_DELETE_DECLINED_BEYOND = ("DELETE FROM declined WHERE ip NOT IN "
                           "(SELECT ip FROM declined ORDER BY until DESC LIMIT ?)")
_DELETE_UNKNOWN_OLD = "DELETE FROM unknown_clients WHERE last_seen < ?"
_DELETE_UNKNOWN_BEYOND = ("DELETE FROM unknown_clients WHERE mac NOT IN "
                          "(SELECT mac FROM unknown_clients ORDER BY last_seen DESC LIMIT ?)")

TABLES = ("leases", "unknown_clients", "declined")
_SQLITE_MIGRATIONS = (
    (1, """
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
    """),
    # a relayed client's DECLINE must come with the option 82 its lease was bound with
    (2, "ALTER TABLE leases ADD COLUMN relay_info BLOB"),
)
# PostgreSQL's REAL is 4 bytes (an epoch time would lose its seconds): DOUBLE PRECISION.
_POSTGRES_MIGRATIONS = tuple(
    (number, sql.replace("REAL", "DOUBLE PRECISION").replace("BLOB", "BYTEA"))
    for number, sql in _SQLITE_MIGRATIONS)
_MIGRATIONS = {"sqlite": _SQLITE_MIGRATIONS, "postgresql": _POSTGRES_MIGRATIONS}


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownClientRecord:
    mac: MacAddress
    first_seen: float
    last_seen: float
    arch: int | None
    vendor_class: str | None


class LeaseStore:
    """Leases at `location`: a SQLite file (created if missing) or a PostgreSQL URL. On SQLite,
    `synchronous="FULL"` fsyncs the WAL at
    every commit (survives power loss); `"NORMAL"` survives a killed process, not power loss."""

    def __init__(self, location: Location, *, synchronous: Synchronous = "FULL") -> None:
        self.location = location
        self.synchronous = synchronous
        # The DHCP service may write from a worker thread while the loop stages the next
        # changes: staging touches only memory, and every use of the connection holds _lock.
        self._db = open_database(location)
        self._lock = threading.Lock()
        if self._db.dialect == "sqlite":
            self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpoint_lock = threading.Lock()
        self._db.migrate("leases", _MIGRATIONS[self._db.dialect])
        self._by_mac: dict[MacAddress, Lease] = {}
        self._by_address: dict[IPv4Address, Lease] = {}
        self._declined: dict[IPv4Address, float] = {}
        self._pending: list[Statement] = []
        # Records no reply waits for (unknown clients seen): written with the next group
        self._lazy: list[Statement] = []
        self._load()

    def _load(self) -> None:
        for mac, ip, node, expires, state, relay_info in self._db.execute(
                "SELECT mac, ip, node, expires, state, relay_info FROM leases"):
            lease = Lease(mac=MacAddress.parse(mac), address=IPv4Address(ip), node=node,
                          expires=expires, state=LeaseState[state], relay_info=relay_info)
            self._remember(lease)
        for ip, until in self._db.execute("SELECT ip, until FROM declined"):
            self._declined[IPv4Address(ip)] = until

    def close(self) -> None:
        self.commit()
        with self._lock, self._checkpoint_lock:
            self._db.close()
            if self._checkpointer is not None:
                self._checkpointer.close()

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
        pending = self._pending
        mac = change.mac
        if change.action is LeaseAction.BIND:
            lease = Lease(mac=mac, address=change.address, node=change.node,
                          expires=change.expires, state=change.state,
                          relay_info=change.relay_info)
            previous = self._by_mac.get(mac)
            holder = self._by_address.get(change.address)
            self._forget(previous)
            if holder is not None and holder.mac != mac:
                self._forget(holder)
                if holder.state is LeaseState.BOUND:
                    pending.append((_DELETE_LEASE, (_mac_text(holder.mac),)))
            self._remember(lease)
            if change.state is LeaseState.BOUND:
                pending.append((_UPSERT_LEASE, (_mac_text(mac), str(change.address),
                                                change.node, change.expires, "BOUND",
                                                change.relay_info)))
            elif previous is not None and previous.state is LeaseState.BOUND:
                # an offer replacing a bound lease: the old row must not come back at restart
                pending.append((_DELETE_LEASE, (_mac_text(mac),)))
        elif change.action is LeaseAction.RELEASE:
            held = self._by_mac.get(mac)
            if held is not None and held.address == change.address:
                self._forget(held)
                if held.state is LeaseState.BOUND:
                    pending.append((_DELETE_LEASE, (_mac_text(mac),)))
        else:  # DECLINE
            taken = self._by_address.get(change.address)
            if taken is not None:
                self._forget(taken)
                pending.append((_DELETE_LEASE, (_mac_text(taken.mac),)))
            self._declined[change.address] = change.expires
            pending.append((_UPSERT_DECLINED, (str(change.address), _mac_text(mac),
                                               change.expires)))

    def record_unknown(self, client: UnknownClient, now: float, *,
                       vendor_class_text: int = 128) -> None:
        """Remember a client no node has (staged; committed with the next commit, but no
        reply waits for it: see `leases_dirty`). Its vendor class, which the client chooses,
        is cut to `vendor_class_text` characters."""
        vendor = client.vendor_class
        if vendor is not None and len(vendor) > vendor_class_text:
            vendor = vendor[:vendor_class_text]
        self._lazy.append((_UPSERT_UNKNOWN, (_mac_text(client.mac), now, now, client.arch,
                                             vendor)))

    def prune(self, now: float, *, unknown_kept: int, unknown_max_age: float,
              declined_kept: int) -> None:
        """Stage the retention pass: expired quarantines go, and the unknown clients (and any
        quarantines) beyond their counts or age, oldest first."""
        declined = self._declined
        expired = [ip for ip, until in declined.items() if until <= now]
        if len(declined) - len(expired) > declined_kept:
            live = sorted((until, ip) for ip, until in declined.items() if until > now)
            expired += [ip for _, ip in live[:len(live) - declined_kept]]
        for ip in expired:
            del declined[ip]
        pending = self._pending
        if expired:
            pending.append((_DELETE_DECLINED_UNTIL, (now,)))
            pending.append((_DELETE_DECLINED_BEYOND, (declined_kept,)))
        pending.append((_DELETE_UNKNOWN_OLD, (now - unknown_max_age,)))
        pending.append((_DELETE_UNKNOWN_BEYOND, (unknown_kept,)))

    def apply(self, change: LeaseChange) -> None:
        """Stage and commit one change."""
        self.stage(change)
        self.commit()

    @property
    def dirty(self) -> bool:
        """Changes are staged that are not written yet."""
        return bool(self._pending or self._lazy)

    @property
    def leases_dirty(self) -> bool:
        """Lease changes (not only unknown clients seen) are staged: a reply may wait for
        them."""
        return bool(self._pending)

    def commit(self) -> None:
        """Write every staged change in one transaction."""
        if self._pending or self._lazy:
            self.write(self.take_pending())

    def take_pending(self) -> list[Statement]:
        """The staged statements, for `write()`; the store starts a new group."""
        pending, self._pending = self._pending, []
        if self._lazy:
            pending += self._lazy
            self._lazy = []
        return pending

    def write(self, statements: list[Statement]) -> None:
        """Run `statements` in one transaction (the group commit): safe in a worker thread
        while the loop stages the next group. Raises the engine's error
        (`Database.error`) with nothing written."""
        if not statements:
            return
        db = self._db
        with self._lock:
            db.begin()
            try:
                start = 0
                while start < len(statements):  # runs of one statement: one executemany
                    sql = statements[start][0]
                    end = start + 1
                    while end < len(statements) and statements[end][0] == sql:
                        end += 1
                    if end - start == 1:
                        db.execute(sql, statements[start][1])
                    else:
                        db.executemany(sql, [params for _, params in statements[start:end]])
                    start = end
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def rollback(self) -> None:
        """Drop the staged changes, and reload the view from the database."""
        self._pending = []
        self._lazy = []
        self._by_mac.clear()
        self._by_address.clear()
        self._declined.clear()
        with self._lock:
            self._load()

    def defer_checkpoints(self) -> None:
        """Stop SQLite from checkpointing the WAL inside commits (a checkpoint fsyncs even at
        synchronous=NORMAL); the caller then calls `checkpoint()`, off its event loop."""
        if self._db.dialect != "sqlite":
            return
        with self._lock:
            self._db.execute("PRAGMA wal_autocheckpoint=0")

    def checkpoint(self) -> None:
        """Copy the WAL into the database (PASSIVE: never waits for, nor blocks, writers), on a
        connection of its own so commits go on meanwhile. Thread-safe."""
        if self._db.dialect != "sqlite":
            return  # PostgreSQL checkpoints by itself
        with self._checkpoint_lock:
            if self._checkpointer is None:
                self._checkpointer = sqlite3.connect(Path(self.location), isolation_level=None,
                                                     check_same_thread=False)
            self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    # --- pool addresses shared by several servers on one database ---

    def allocate(self, mac: MacAddress, candidates: Iterable[IPv4Address], *, now: float,
                 expires: float, node: str | None = None) -> IPv4Address | None:
        """Bind `mac` to the first of `candidates` that no live lease holds and no quarantine
        blocks, claimed in the database itself (`claim`), so servers sharing it never hand
        out one address twice. None: every candidate is taken."""
        for address in candidates:
            held = self._by_address.get(address)
            if held is not None and held.mac != mac and held.expires >= now:
                continue
            if self.is_declined(address, now):
                continue
            if self.claim(mac, address, now=now, expires=expires, node=node):
                return address
        return None

    def claim(self, mac: MacAddress, address: IPv4Address, *, now: float, expires: float,
              node: str | None = None) -> bool:
        """Bind `mac` to `address` now, in one transaction, unless another MAC's lease on it
        is still live or it is quarantined: the address's UNIQUE constraint and an
        `INSERT … ON CONFLICT (ip) DO UPDATE … WHERE` decide, so two servers claiming one
        address at once get one yes and one no. Either way the view learns the holder."""
        self.commit()  # staged changes first: they are older
        db = self._db
        with self._lock:
            db.begin()
            try:
                blocked = db.execute(_QUARANTINED, (str(address), now)).fetchall()
                db.execute(_DELETE_OTHER_LEASES, (_mac_text(mac), str(address)))
                won = [] if blocked else db.execute(
                    _CLAIM, (_mac_text(mac), str(address), node, expires, now)).fetchall()
                db.execute("COMMIT")
            except db.integrity_error:  # the same MAC claimed elsewhere at this instant
                db.execute("ROLLBACK")
                won = []
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            if not won:
                self._learn_holder(address)
                return False
        self._forget(self._by_mac.get(mac))
        self._forget(self._by_address.get(address))
        self._remember(Lease(mac=mac, address=address, node=node, expires=expires,
                             state=LeaseState.BOUND, relay_info=None))
        return True

    def _learn_holder(self, address: IPv4Address) -> None:
        """Put the database's row for `address` (another server's, maybe) into the view."""
        row = self._db.execute(_SELECT_LEASE_AT, (str(address),)).fetchone()
        if row is not None:
            mac, ip, node, expires, state, relay_info = row
            lease = Lease(mac=MacAddress.parse(mac), address=IPv4Address(ip), node=node,
                          expires=expires, state=LeaseState[state], relay_info=relay_info)
            self._forget(self._by_address.get(lease.address))
            self._remember(lease)

    def _remember(self, lease: Lease) -> None:
        self._by_mac[lease.mac] = lease
        self._by_address[lease.address] = lease

    def _forget(self, lease: Lease | None) -> None:
        if lease is None:
            return
        current = self._by_mac.get(lease.mac)
        if current is lease or current == lease:
            del self._by_mac[lease.mac]
        current = self._by_address.get(lease.address)
        if current is lease or current == lease:
            del self._by_address[lease.address]

    # --- what the CLI lists ---

    def leases(self) -> list[Lease]:
        """Bound leases (offers are not listed), by address."""
        return sorted((lease for lease in self._by_mac.values()
                       if lease.state is LeaseState.BOUND), key=lambda lease: lease.address)

    def unknown_clients(self) -> list[UnknownClientRecord]:
        self.commit()
        with self._lock:
            rows = self._db.execute(
                "SELECT mac, first_seen, last_seen, arch, vendor_class FROM unknown_clients "
                "ORDER BY first_seen, mac").fetchall()
        return [
            UnknownClientRecord(mac=MacAddress.parse(mac), first_seen=first, last_seen=last,
                                arch=arch, vendor_class=vendor)
            for mac, first, last, arch, vendor in rows
        ]

    def forget_unknown(self, mac: MacAddress) -> bool:
        """Drop `mac` from the unknown clients (adopted as a node, or noise). True if it was
        there."""
        self.commit()
        with self._lock:
            changed = self._db.execute("DELETE FROM unknown_clients WHERE mac = ?",
                                       (_mac_text(mac),)).rowcount
        return changed > 0


def _mac_text(mac: MacAddress) -> str:
    """`str(mac)`, the form the tables hold, without its per-byte formatting."""
    return mac.packed.hex(":")
