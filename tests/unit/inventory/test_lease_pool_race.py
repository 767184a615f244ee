"""Discovery-pool addresses claimed by several servers on one database (two stores on one
SQLite file, or on one PostgreSQL), the way the DHCP service binds them: a claim staged and
written in a group commit, lost claims settled into the view. However the claims interleave,
no address goes to two MACs, and none is lost."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Address

from oneroot.inventory.database import open_database
from oneroot.inventory.leases import LeaseStore
from oneroot.net import MacAddress
from oneroot.proto.dhcp import LeaseAction, LeaseChange, LeaseState
from oneroot.testing.postgres import StoreAt

POOL = [IPv4Address("10.0.2.0") + n for n in range(1, 121)]
NOW, EXPIRES = 1000.0, 5000.0


def mac(server: int, n: int) -> MacAddress:
    return MacAddress(bytes((2, 0, 0, server, n >> 8, n & 0xFF)))


def claim(store: LeaseStore, client: MacAddress, address: IPv4Address, *, now: float = NOW,
          expires: float = EXPIRES) -> bool:
    """Bind `client` to `address` as the DHCP service does; whether the claim was won."""
    store.stage(LeaseChange(action=LeaseAction.BIND, mac=client, address=address,
                            expires=expires, state=LeaseState.BOUND), now=now)
    lost = store.write(store.take_pending())
    store.settle(lost)
    return not lost


def allocate(store: LeaseStore, client: MacAddress, candidates: Iterable[IPv4Address], *,
             now: float = NOW) -> IPv4Address | None:
    """The first candidate this server's view finds free whose claim wins (the responder's
    choice, then the database's word)."""
    for address in candidates:
        held = store.lease_for_address(address)
        if held is not None and held.mac != client and held.expires >= now:
            continue
        if not store.is_declined(address, now) and claim(store, client, address, now=now):
            return address
    return None


def test_two_servers_never_hand_out_one_address_twice(store_at: StoreAt) -> None:
    servers = [LeaseStore(store_at("leases"), server=name) for name in ("a", "b")]
    clients = 100  # per server: 200 clients for 120 addresses

    def storm(index: int) -> dict[MacAddress, IPv4Address]:
        store, got = servers[index], {}
        for n in range(clients):
            address = allocate(store, mac(index, n), POOL)
            if address is not None:
                got[mac(index, n)] = address
        return got

    with ThreadPoolExecutor(2) as pool:
        handed = [*pool.map(storm, range(2))]
    given = [address for got in handed for address in got.values()]
    assert len(given) == len(set(given)), "one address handed to two clients"
    assert sorted(given) == POOL  # every address went to someone: none lost to the race
    assert all(handed), "both servers allocated"
    db = open_database(store_at("leases"))
    rows = dict(db.execute("SELECT ip, mac FROM leases").fetchall())
    db.close()
    assert rows == {str(a): m.packed.hex(":") for got in handed for m, a in got.items()}
    for store in servers:
        store.close()


def test_an_expired_lease_or_quarantine_decides_the_claim(store_at: StoreAt) -> None:
    first, second = (LeaseStore(store_at("leases"), server=name) for name in ("a", "b"))
    x, y = POOL[0], POOL[1]
    assert claim(first, mac(1, 1), x, expires=NOW + 10)
    assert not claim(second, mac(2, 1), x)  # live elsewhere
    assert second.lease_for_address(x) is not None  # the loser learned who holds it
    assert allocate(second, mac(2, 1), [x, y]) == y
    assert claim(second, mac(2, 2), x, now=NOW + 11)  # first's has expired
    first.stage(LeaseChange(action=LeaseAction.DECLINE, mac=mac(1, 1), address=POOL[2],
                            expires=NOW + 100))
    first.commit()
    assert not claim(second, mac(2, 3), POOL[2])  # quarantined
    assert claim(second, mac(2, 1), POOL[3])  # a MAC moves (its lease through this server)
    assert second.lease_for_address(y) is None
    db = open_database(store_at("leases"))
    assert db.execute("SELECT ip FROM leases WHERE mac = ?", (str(mac(2, 1)),)
                      ).fetchall() == [(str(POOL[3]),)]
    db.close()
    first.close()
    second.close()
