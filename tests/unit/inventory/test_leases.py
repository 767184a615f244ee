"""LeaseStore on a real SQLite file and a real PostgreSQL: persistence, migrations, offers in
memory only."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path

import psycopg
import pytest

from oneroot.inventory.leases import _MIGRATIONS, LeaseStore
from oneroot.net import MacAddress
from oneroot.proto.dhcp import LeaseAction, LeaseChange, LeaseState, UnknownClient
from oneroot.testing.postgres import StoreAt

A = MacAddress.parse("52:54:00:00:00:0a")
B = MacAddress.parse("52:54:00:00:00:0b")
X = IPv4Address("10.0.0.100")
Y = IPv4Address("10.0.0.101")


def bind(mac: MacAddress, address: IPv4Address, state: LeaseState = LeaseState.BOUND,
         node: str | None = None) -> LeaseChange:
    return LeaseChange(action=LeaseAction.BIND, mac=mac, address=address, node=node,
                       expires=2000.0, state=state)


def test_bound_lease_survives_reopen_offer_does_not(store_at: StoreAt) -> None:
    db = store_at("leases")
    store = LeaseStore(db)
    store.apply(bind(A, X, node="node01"))
    store.apply(bind(B, Y, LeaseState.OFFERED))
    assert store.lease_for_address(Y) is not None
    assert [lease.mac for lease in store.leases()] == [A]
    store.close()
    again = LeaseStore(db, synchronous="NORMAL")
    lease = again.lease_for_mac(A)
    assert lease is not None and lease.address == X and lease.node == "node01"
    assert again.lease_for_mac(B) is None
    again.close()


def test_schema_version_and_wal(tmp_path: Path) -> None:
    db = tmp_path / "leases.db"
    LeaseStore(db).close()
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 3
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()
    LeaseStore(db).close()  # reopening a current schema migrates nothing


def test_version_1_database_keeps_its_leases(tmp_path: Path) -> None:
    db = tmp_path / "leases.db"
    raw = sqlite3.connect(db)
    raw.executescript(_MIGRATIONS["sqlite"][0][1] + "; PRAGMA user_version=1;")
    raw.execute("INSERT INTO leases VALUES (?, ?, 'node01', 99.0, 'BOUND')", (str(A), str(X)))
    raw.commit()
    raw.close()
    store = LeaseStore(db)
    lease = store.lease_for_mac(A)
    assert lease is not None and lease.address == X and lease.relay_info is None
    store.apply(replace(bind(A, Y), relay_info=b"\x01\x01p"))
    store.close()
    again = LeaseStore(db)
    lease = again.lease_for_mac(A)
    assert lease is not None and lease.relay_info == b"\x01\x01p"
    again.close()


def test_retention_of_unknown_clients_and_quarantines(store_at: StoreAt) -> None:
    store = LeaseStore(store_at("leases"), synchronous="NORMAL")
    for n in range(50):
        mac = MacAddress(bytes((2, 0, 0, 0, 0, n)))
        store.record_unknown(UnknownClient(mac=mac, arch=None, vendor_class="v" * 10_000),
                             float(n), vendor_class_text=64)
        store.stage(LeaseChange(action=LeaseAction.DECLINE, mac=mac,
                                address=IPv4Address(f"10.0.1.{n}"), expires=100.0 + n))
    store.commit()
    assert max(len(c.vendor_class or "") for c in store.unknown_clients()) == 64
    store.prune(120.0, unknown_kept=10, unknown_max_age=1000.0, declined_kept=5)
    store.commit()
    seen = sorted(c.last_seen for c in store.unknown_clients())
    assert seen == [float(n) for n in range(40, 50)]  # the 10 newest
    store.prune(130.0, unknown_kept=10, unknown_max_age=85.0, declined_kept=5)
    store.commit()
    assert len(store.unknown_clients()) == 5  # seen at 45..49: within 85 s of 130
    declined = [n for n in range(50) if store.is_declined(IPv4Address(f"10.0.1.{n}"), 0.0)]
    assert declined == [45, 46, 47, 48, 49]  # expired ones went, then the soonest to expire
    store.close()
    reopened = LeaseStore(store_at("leases"))
    assert [n for n in range(50) if reopened.is_declined(IPv4Address(f"10.0.1.{n}"), 0.0)] \
        == declined
    reopened.close()


def test_release_decline_and_rebind_elsewhere(store_at: StoreAt) -> None:
    store = LeaseStore(store_at("leases"))
    store.apply(bind(A, X))
    store.apply(LeaseChange(action=LeaseAction.RELEASE, mac=A, address=X))
    assert store.lease_for_mac(A) is None and store.leases() == []
    store.apply(bind(A, X))
    store.apply(bind(A, Y))  # moved: the old address is free again
    assert store.lease_for_address(X) is None
    store.apply(LeaseChange(action=LeaseAction.DECLINE, mac=A, address=Y, expires=50.0))
    assert store.is_declined(Y, 10.0) and not store.is_declined(Y, 60.0)
    assert store.lease_for_mac(A) is None
    store.close()
    reopened = LeaseStore(store_at("leases"))
    assert reopened.is_declined(Y, 10.0) and reopened.leases() == []
    reopened.close()


def test_group_commit_and_rollback(store_at: StoreAt) -> None:
    store = LeaseStore(store_at("leases"))
    store.stage(bind(A, X))
    store.stage(bind(B, Y))
    assert store.dirty
    store.rollback()
    assert store.leases() == [] and not store.dirty
    store.stage(bind(A, X))
    store.stage(bind(B, Y))
    store.commit()
    store.close()
    assert len(LeaseStore(store_at("leases")).leases()) == 2


def test_unknown_clients(store_at: StoreAt) -> None:
    store = LeaseStore(store_at("leases"))
    store.record_unknown(UnknownClient(mac=A, arch=7, vendor_class="PXEClient:Arch:00007"), 1.0)
    store.record_unknown(UnknownClient(mac=A, arch=None, vendor_class=None), 5.0)
    store.record_unknown(UnknownClient(mac=B, arch=0, vendor_class=None), 3.0)
    seen = store.unknown_clients()
    assert [(c.mac, c.first_seen, c.last_seen, c.arch) for c in seen] == [
        (A, 1.0, 5.0, 7), (B, 3.0, 3.0, 0)]
    assert seen[0].vendor_class == "PXEClient:Arch:00007"
    assert store.forget_unknown(A) is True
    assert store.forget_unknown(A) is False
    assert [c.mac for c in store.unknown_clients()] == [B]
    store.close()


def test_write_from_another_thread_while_staging(store_at: StoreAt) -> None:
    """The service's group commit: take the staged statements, write them in a worker thread
    while the next changes are staged; a checkpoint runs beside the writes."""
    store = LeaseStore(store_at("leases"), synchronous="FULL")
    store.defer_checkpoints()
    store.stage(bind(A, X))
    first = store.take_pending()
    assert first and not store.dirty
    with ThreadPoolExecutor(1) as pool:
        writing = pool.submit(store.write, first)
        store.stage(bind(B, Y))  # the next group, staged meanwhile
        writing.result()
        assert store.dirty
        pool.submit(store.checkpoint).result()
    assert [lease.mac for lease in LeaseStore(store_at("leases")).leases()] == [A]
    store.close()  # writes the second group
    assert len(LeaseStore(store_at("leases")).leases()) == 2


def test_failed_write_changes_nothing(store_at: StoreAt) -> None:
    store = LeaseStore(store_at("leases"))
    store.apply(bind(A, X))
    store.stage(bind(B, Y))
    statements = [*store.take_pending(), ("INSERT INTO no_such_table VALUES (?)", (1,))]
    with pytest.raises((sqlite3.OperationalError, psycopg.errors.UndefinedTable)):
        store.write(statements)
    store.rollback()
    assert [lease.mac for lease in store.leases()] == [A]
    store.close()
    assert [lease.mac for lease in LeaseStore(store_at("leases")).leases()] == [A]


def test_times_keep_their_fraction(store_at: StoreAt) -> None:
    """An epoch time with a fraction comes back exact (PostgreSQL's REAL would round it)."""
    store = LeaseStore(store_at("leases"))
    store.apply(replace(bind(A, X), expires=1_790_000_000.25))
    store.close()
    again = LeaseStore(store_at("leases"))
    lease = again.lease_for_mac(A)
    assert lease is not None and lease.expires == 1_790_000_000.25
    again.close()


def test_unknown_clients_wait_for_the_next_write(store_at: StoreAt) -> None:
    """An unknown client's record holds no reply: it is staged apart from lease changes (the
    service writes it with the next group) and still goes out with take_pending/commit."""
    store = LeaseStore(store_at("leases"), synchronous="NORMAL")
    store.record_unknown(UnknownClient(mac=A, arch=None, vendor_class=None), 1.0)
    assert store.dirty and not store.leases_dirty
    store.stage(bind(B, Y))
    assert store.leases_dirty
    statements = store.take_pending()
    assert len(statements) == 2 and not store.dirty
    store.write(statements)
    assert [c.mac for c in LeaseStore(store_at("leases")).unknown_clients()] == [A]
    store.record_unknown(UnknownClient(mac=B, arch=None, vendor_class=None), 2.0)
    store.close()  # written at close too
    assert {c.mac for c in LeaseStore(store_at("leases")).unknown_clients()} == {A, B}
