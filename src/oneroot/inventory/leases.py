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

import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Literal

from oneroot.inventory.database import Location, open_database, postgres_migrations
from oneroot.net import MacAddress
from oneroot.proto.dhcp import Lease, LeaseAction, LeaseChange, LeaseState, UnknownClient

Synchronous = Literal["OFF", "NORMAL", "FULL"]
Statement = tuple[str, tuple[object, ...]]

# Upserts, not SQLite's INSERT OR REPLACE, so one statement serves both engines. stage() deletes
# the row of an address's previous holder first, so only the MAC can conflict.
_UPSERT_LEASE = ("INSERT INTO leases (mac, ip, node, expires, state, relay_info, server) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (mac) DO UPDATE SET ip = excluded.ip,"
                 " node = excluded.node, expires = excluded.expires, state = excluded.state,"
                 " relay_info = excluded.relay_info, server = excluded.server")
_DELETE_LEASE = "DELETE FROM leases WHERE mac = ?"
# A RELEASE or DECLINE ends the lease on that address only: the row may have moved since it was
# read (the client bound another address through another server)
_DELETE_LEASE_AT = "DELETE FROM leases WHERE mac = ? AND ip = ?"
_UPSERT_DECLINED = ("INSERT INTO declined (ip, mac, until) VALUES (?, ?, ?) ON CONFLICT (ip) "
                    "DO UPDATE SET mac = excluded.mac, until = excluded.until")
_UPSERT_UNKNOWN = (
    "INSERT INTO unknown_clients (mac, first_seen, last_seen, arch, vendor_class) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (mac) DO UPDATE SET last_seen = excluded.last_seen,"
    " arch = coalesce(excluded.arch, unknown_clients.arch),"
    " vendor_class = coalesce(excluded.vendor_class, unknown_clients.vendor_class)")

# The claim of a pool address, inside the group commit (the one way a pool lease is bound):
# the row for that address becomes ours only if it is the client's already or its lease has
# expired (RETURNING says whether it did), so two servers claiming one address at once get one
# yes and one no. An address another server quarantined is not inserted (a live row of it was
# deleted by the DECLINE).
_GROUP_CLAIM = ("INSERT INTO leases (mac, ip, node, expires, state, relay_info, server) "
                "SELECT ?, ?, ?, ?, 'BOUND', ?, ? WHERE NOT EXISTS "
                "(SELECT 1 FROM declined WHERE ip = ? AND until > ?)"
                " AND NOT EXISTS (SELECT 1 FROM leases WHERE mac = ? AND ip <> ?)"
                " ON CONFLICT (ip) DO UPDATE SET mac = excluded.mac,"
                " node = excluded.node, expires = excluded.expires, state = excluded.state,"
                " relay_info = excluded.relay_info, server = excluded.server"
                " WHERE leases.mac = excluded.mac OR leases.expires < ? RETURNING mac")
_GROUP_CLAIM_ROWS = _GROUP_CLAIM.removesuffix(" RETURNING mac")  # for executemany
# Before a group claim: the client's other lease goes if this server bound it or it expired. A
# live one another server bound stays, and the claim is lost (the NOT EXISTS above): it is a
# REQUEST the client gave up (read late, under load) after it took that server's ACK; deleting
# that row would free an address the client holds, for any server to hand out again.
_DELETE_OUR_OTHER_LEASES = ("DELETE FROM leases WHERE mac = ? AND ip <> ?"
                            " AND (coalesce(server, '') = ? OR expires < ?)")
# An offer replacing a bound lease deletes it only if this server bound it or it expired: a
# live lease another server bound (learnt from a lost claim) is where the client is now.
_DELETE_OUR_LEASE = ("DELETE FROM leases WHERE mac = ?"
                     " AND (coalesce(server, '') = ? OR expires < ?)")
_SELECT_LEASE_OF = "SELECT mac, ip, node, expires, state, relay_info FROM leases WHERE mac = ?"
_SELECT_LEASE_AT = "SELECT mac, ip, node, expires, state, relay_info FROM leases WHERE ip = ?"
# A pool client's renewal this server's view cannot answer: its row and the address's (both
# keys are unique, so an index read each)
_SELECT_LEASES_OF_OR_AT = ("SELECT mac, ip, node, expires, state, relay_info FROM leases"
                           " WHERE mac = ? OR ip = ?")

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
    # which server bound it (several servers may share one database)
    (3, "ALTER TABLE leases ADD COLUMN server TEXT"),
)
_MIGRATIONS = {"sqlite": _SQLITE_MIGRATIONS,
               "postgresql": postgres_migrations(_SQLITE_MIGRATIONS)}


@dataclass(frozen=True, slots=True, kw_only=True)
class LostClaim:
    """A pool client's bound lease the database refused: `holder` has the address, or else
    is the client's own live lease on another address, which another server bound."""

    mac: MacAddress
    address: IPv4Address
    holder: Lease | None  # None: the address is quarantined


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

    def __init__(self, location: Location, *, synchronous: Synchronous = "FULL",
                 server: str | None = None) -> None:
        self.location = location
        self.synchronous = synchronous
        self.server = server  # this server's id, written with the leases it binds
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
        for row in self._db.execute(
                "SELECT mac, ip, node, expires, state, relay_info FROM leases"):
            self._remember(_lease_of(row))
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

    def stage(self, change: LeaseChange, *, now: float | None = None) -> bool:
        """Apply `change` to the view now and to the database in the open transaction. A pool
        client's bound lease (no node) is a claim: `write()` reports it lost when the database
        says another client holds the address (another server bound it). True if it queued a
        statement for the database; an offer of a free address changes only the view."""
        pending = self._pending
        queued = len(pending)
        mac = change.mac
        if change.action is LeaseAction.BIND:
            lease = Lease(mac=mac, address=change.address, node=change.node,
                          expires=change.expires, state=change.state,
                          relay_info=change.relay_info)
            claim = change.state is LeaseState.BOUND and change.node is None
            previous = self._by_mac.get(mac)
            holder = self._by_address.get(change.address)
            self._forget(previous)
            if holder is not None and holder.mac != mac:
                self._forget(holder)
                if holder.state is LeaseState.BOUND and not claim:
                    pending.append((_DELETE_LEASE, (_mac_text(holder.mac),)))
            self._remember(lease)
            if claim:
                at = time.time() if now is None else now
                ip = str(change.address)
                text = _mac_text(mac)
                pending.append((_GROUP_CLAIM, (text, ip, None, change.expires,
                                               change.relay_info, self.server, ip, at, text,
                                               ip, at)))
            elif change.state is LeaseState.BOUND:
                pending.append((_UPSERT_LEASE, (_mac_text(mac), str(change.address),
                                                change.node, change.expires, "BOUND",
                                                change.relay_info, self.server)))
            elif previous is not None and previous.state is LeaseState.BOUND:
                # an offer replacing a bound lease: the old row must not come back at restart;
                # but another server's live one is the client's (this DISCOVER was read late)
                at = time.time() if now is None else now
                pending.append((_DELETE_OUR_LEASE, (_mac_text(mac), self.server or "", at)))
        elif change.action is LeaseAction.RELEASE:
            held = self._by_mac.get(mac)
            if held is not None and held.address == change.address:
                self._forget(held)
                if held.state is LeaseState.BOUND:
                    pending.append((_DELETE_LEASE_AT, (_mac_text(mac), str(held.address))))
        else:  # DECLINE
            taken = self._by_address.get(change.address)
            if taken is not None:
                self._forget(taken)
                pending.append((_DELETE_LEASE_AT, (_mac_text(taken.mac), str(taken.address))))
            self._declined[change.address] = change.expires
            pending.append((_UPSERT_DECLINED, (str(change.address), _mac_text(mac),
                                               change.expires)))
        return len(pending) > queued

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
    def remote(self) -> bool:
        """The database is another process's (PostgreSQL): a write waits for the network."""
        return self._db.dialect == "postgresql"

    @property
    def dirty(self) -> bool:
        """Changes are staged that are not written yet."""
        return bool(self._pending or self._lazy)

    @property
    def leases_dirty(self) -> bool:
        """Lease changes (not only unknown clients seen) are staged: a reply may wait for
        them."""
        return bool(self._pending)

    def commit(self) -> list[LostClaim]:
        """Write every staged change in one transaction; the claims lost (already settled)."""
        if not (self._pending or self._lazy):
            return []
        lost = self.write(self.take_pending())
        self.settle(lost)
        return lost

    def take_pending(self) -> list[Statement]:
        """The staged statements, for `write()`; the store starts a new group."""
        pending, self._pending = self._pending, []
        if self._lazy:
            pending += self._lazy
            self._lazy = []
        return pending

    def write(self, statements: list[Statement]) -> list[LostClaim]:
        """Run `statements` in one transaction (the group commit): safe in a worker thread
        while the loop stages the next group. The pool claims go first, in address order (two
        servers' groups then lock addresses in one order: no deadlock); those another client
        holds come back as lost, for `settle()` on the loop. Raises the engine's error
        (`Database.error`) with nothing written."""
        if not statements:
            return []
        claims = sorted((params for sql, params in statements if sql is _GROUP_CLAIM),
                        key=_packed_address)
        if claims:
            statements = [s for s in statements if s[0] is not _GROUP_CLAIM]
        with self._lock:
            try:
                return self._write_group(claims, statements)
            except self._db.integrity_error:
                # Another server's write of one of these MACs committed meanwhile (a client
                # that started over through it): run again, its row is visible now.
                return self._write_group(claims, statements)

    def _write_group(self, claims: list[tuple[object, ...]],
                     statements: list[Statement]) -> list[LostClaim]:
        db = self._db
        db.begin()
        try:
            lost = self._run_claims(claims) if claims else []
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
        return lost

    def _run_claims(self, claims: list[tuple[object, ...]]) -> list[LostClaim]:
        db = self._db
        ours = self.server or ""
        db.executemany(_DELETE_OUR_OTHER_LEASES,
                       [(params[0], params[1], ours, params[-1]) for params in claims])
        # SQLite says how many rows one executemany changed: when every claim changed its row
        # (the common case: no other server shares the file), none was lost, and the group
        # costs one statement instead of one per claim (RETURNING cannot go in an
        # executemany). Otherwise, a claim was won iff the address's row is now its client's.
        changed = db.executemany_counted(_GROUP_CLAIM_ROWS, claims)
        if changed == len(claims):
            return []
        lost = []
        for params in claims:
            if changed is None:
                won = bool(db.execute(_GROUP_CLAIM, params).fetchall())
                row = None
            else:
                row = db.execute(_SELECT_LEASE_AT, (params[1],)).fetchone()
                won = row is not None and row[0] == params[0]
            if not won:
                row = row or db.execute(_SELECT_LEASE_AT, (params[1],)).fetchone() or \
                    db.execute(_SELECT_LEASE_OF, (params[0],)).fetchone()
                lost.append(LostClaim(mac=MacAddress.parse(str(params[0])),
                                      address=IPv4Address(str(params[1])),
                                      holder=None if row is None else _lease_of(row)))
        return lost

    def read_leases(self, wanted: list[tuple[MacAddress, IPv4Address]]) -> list[Lease]:
        """The database's rows of each (client, address): the leases another server bound
        that the view may lack (several servers on one database). Thread-safe; `learn()`
        puts them into the view, on the loop."""
        found: dict[str, Lease] = {}
        with self._lock:
            for mac, address in wanted:
                for row in self._db.execute(_SELECT_LEASES_OF_OR_AT,
                                            (_mac_text(mac), str(address))).fetchall():
                    found[row[0]] = _lease_of(row)
        return list(found.values())

    def learn(self, leases: list[Lease], now: float) -> None:
        """Put leases the database holds (`read_leases`) into the view, in place of what it
        says about their clients and addresses; expired ones are not kept: their addresses
        are free, and a client's claim on one decides in the database."""
        for lease in leases:
            if lease.expires > now:
                self._forget(self._by_address.get(lease.address))
                self._forget(self._by_mac.get(lease.mac))
                self._remember(lease)

    def settle(self, lost: list[LostClaim]) -> None:
        """Put what the database said about lost claims into the view (on the loop)."""
        for claim in lost:
            mine = self._by_mac.get(claim.mac)
            if mine is not None and mine.address == claim.address:
                self._forget(mine)
            if claim.holder is not None:  # on the address, or the client's own elsewhere
                self._forget(self._by_address.get(claim.holder.address))
                self._forget(self._by_mac.get(claim.holder.mac))
                self._remember(claim.holder)

    def rollback(self) -> None:
        """Drop the staged changes, and reload the view from the database."""
        self._pending = []
        self._lazy = []
        with self._lock:
            try:
                by_mac, by_address, declined = self._by_mac, self._by_address, self._declined
                self._by_mac, self._by_address, self._declined = {}, {}, {}
                self._load()
            except self._db.error:  # unreachable (PostgreSQL down): keep the view
                self._by_mac, self._by_address, self._declined = by_mac, by_address, declined

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


def _lease_of(row: Any) -> Lease:
    mac, ip, node, expires, state, relay_info = row
    return Lease(mac=MacAddress.parse(mac), address=IPv4Address(ip), node=node,
                 expires=expires, state=LeaseState[state],
                 relay_info=None if relay_info is None else bytes(relay_info))


def _packed_address(params: tuple[object, ...]) -> bytes:
    """A claim's address in network order, whose byte order is the numeric order."""
    return socket.inet_aton(str(params[1]))


def _mac_text(mac: MacAddress) -> str:
    """`str(mac)`, the form the tables hold, without its per-byte formatting."""
    return mac.packed.hex(":")
