"""Discovery-pool addresses claimed by several servers on one database (two stores on one
SQLite file, or on one PostgreSQL): however the claims interleave, no address goes to two
MACs, and none is lost."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Address

from oneroot.inventory.database import open_database
from oneroot.inventory.leases import LeaseStore
from oneroot.net import MacAddress
from oneroot.proto.dhcp import LeaseAction, LeaseChange
from oneroot.testing.postgres import StoreAt

POOL = [IPv4Address("10.0.2.0") + n for n in range(1, 121)]
NOW, EXPIRES = 1000.0, 5000.0


def mac(server: int, n: int) -> MacAddress:
    return MacAddress(bytes((2, 0, 0, server, n >> 8, n & 0xFF)))


def test_two_servers_never_hand_out_one_address_twice(store_at: StoreAt) -> None:
    servers = [LeaseStore(store_at("leases")) for _ in range(2)]
    clients = 100  # per server: 200 clients for 120 addresses

    def storm(index: int) -> dict[MacAddress, IPv4Address]:
        store, got = servers[index], {}
        for n in range(clients):
            address = store.allocate(mac(index, n), POOL, now=NOW, expires=EXPIRES)
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
    first, second = (LeaseStore(store_at("leases")) for _ in range(2))
    x, y = POOL[0], POOL[1]
    assert first.claim(mac(1, 1), x, now=NOW, expires=NOW + 10)
    assert not second.claim(mac(2, 1), x, now=NOW, expires=EXPIRES)  # live elsewhere
    assert second.lease_for_address(x) is not None  # the loser learned who holds it
    assert second.allocate(mac(2, 1), [x, y], now=NOW, expires=EXPIRES) == y
    assert second.claim(mac(2, 2), x, now=NOW + 11, expires=EXPIRES)  # first's has expired
    first.apply(LeaseChange(action=LeaseAction.DECLINE, mac=mac(1, 1), address=POOL[2],
                            expires=NOW + 100))
    assert not second.claim(mac(2, 3), POOL[2], now=NOW, expires=EXPIRES)  # quarantined
    assert second.claim(mac(2, 1), POOL[3], now=NOW, expires=EXPIRES)  # a MAC moves
    assert second.lease_for_address(y) is None
    first.close()
    second.close()
