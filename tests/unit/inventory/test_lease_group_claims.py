"""Pool leases bound through the group commit (the DHCP service's path) are claims: on one
database shared by two servers, the second server's bind of an address the first one holds
comes back lost, with the holder, and changes nothing in the database."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Address

from oneroot.inventory.database import open_database
from oneroot.inventory.leases import LeaseStore
from oneroot.net import MacAddress
from oneroot.proto.dhcp import LeaseAction, LeaseChange, LeaseState
from oneroot.testing.postgres import StoreAt

NOW = 1000.0
ADDRESS = IPv4Address("10.0.2.10")
FIRST = MacAddress.parse("02:00:00:00:00:01")
SECOND = MacAddress.parse("02:00:00:00:00:02")


def bind(mac: MacAddress, address: IPv4Address = ADDRESS, *, node: str | None = None,
         expires: float = NOW + 600) -> LeaseChange:
    return LeaseChange(action=LeaseAction.BIND, mac=mac, address=address, node=node,
                       expires=expires, state=LeaseState.BOUND)


def rows(store_at: StoreAt) -> list[tuple[str, str, str | None]]:
    db = open_database(store_at("leases"))
    try:
        return [tuple(r) for r in db.execute("SELECT mac, ip, server FROM leases ORDER BY ip")]
    finally:
        db.close()


def test_second_servers_bind_is_lost_and_learns_the_holder(store_at: StoreAt) -> None:
    a = LeaseStore(store_at("leases"), server="a")
    b = LeaseStore(store_at("leases"), server="b")
    a.stage(bind(FIRST), now=NOW)
    assert a.write(a.take_pending()) == []
    b.stage(bind(SECOND), now=NOW)  # b's view does not know a's lease yet
    lost = b.write(b.take_pending())
    assert [(c.mac, c.address) for c in lost] == [(SECOND, ADDRESS)]
    holder = lost[0].holder
    assert holder is not None and holder.mac == FIRST
    b.settle(lost)
    assert b.lease_for_mac(SECOND) is None
    held = b.lease_for_address(ADDRESS)
    assert held is not None and held.mac == FIRST
    assert rows(store_at) == [(str(FIRST), str(ADDRESS), "a")]
    # The holder renews through the other server: its own address, so the claim wins.
    b.stage(bind(FIRST, expires=NOW + 900), now=NOW)
    assert b.write(b.take_pending()) == []
    assert rows(store_at) == [(str(FIRST), str(ADDRESS), "b")]
    a.close()
    b.close()


def test_an_expired_lease_is_taken_and_a_quarantine_is_not(store_at: StoreAt) -> None:
    a = LeaseStore(store_at("leases"), server="a")
    b = LeaseStore(store_at("leases"), server="b")
    a.stage(bind(FIRST, expires=NOW - 1), now=NOW - 700)
    a.commit()
    b.stage(bind(SECOND), now=NOW)
    assert b.write(b.take_pending()) == []  # expired: the address is free again
    assert rows(store_at) == [(str(SECOND), str(ADDRESS), "b")]
    other = IPv4Address("10.0.2.11")
    a.stage(LeaseChange(action=LeaseAction.DECLINE, mac=FIRST, address=other,
                        expires=NOW + 600))
    a.commit()
    b.stage(bind(SECOND, other), now=NOW)
    lost = b.write(b.take_pending())
    assert [(c.address, c.holder) for c in lost] == [(other, None)]
    # Nothing bound on the quarantined address (the client gave up its old one to ask).
    assert rows(store_at) == []
    a.close()
    b.close()


def test_node_leases_are_not_claims(store_at: StoreAt) -> None:
    """An inventory node's fixed address is the node's: its bind never comes back lost."""
    a = LeaseStore(store_at("leases"), server="a")
    a.stage(bind(FIRST, node="n1"), now=NOW)
    assert a.write(a.take_pending()) == []
    assert rows(store_at) == [(str(FIRST), str(ADDRESS), "a")]
    a.close()


def test_two_servers_group_commits_never_share_an_address(store_at: StoreAt) -> None:
    """Two servers write groups of claims on overlapping addresses at once (in opposite
    orders: the claims are taken in address order, so neither deadlocks): each address is
    won once, and the database holds exactly the winners."""
    pool = [IPv4Address("10.0.3.0") + n for n in range(1, 41)]
    stores = [LeaseStore(store_at("leases"), server=name) for name in ("a", "b")]

    def storm(index: int) -> list[tuple[MacAddress, IPv4Address]]:
        store, won = stores[index], []
        order = pool if index == 0 else pool[::-1]
        for start in range(0, len(order), 8):
            group = [(MacAddress(bytes((2, 0, 0, index, 0, n))), address)
                     for n, address in enumerate(order[start:start + 8], start)]
            for mac, address in group:
                store.stage(bind(mac, address), now=NOW)
            lost = {(c.mac, c.address) for c in store.write(store.take_pending())}
            won += [claim for claim in group if claim not in lost]
        return won

    with ThreadPoolExecutor(2) as threads:
        won = [claim for result in threads.map(storm, range(2)) for claim in result]
    addresses = [address for _, address in won]
    assert len(addresses) == len(set(addresses)), "one address bound to two clients"
    assert sorted(addresses) == pool
    assert sorted((mac, ip) for mac, ip, _ in rows(store_at)) == sorted(
        (str(mac), str(address)) for mac, address in won)
    for store in stores:
        store.close()


def test_a_group_meeting_another_servers_uncommitted_row_of_its_mac_is_retried(
        store_at: StoreAt) -> None:
    """Server a's write of FIRST is in flight when b's group claims FIRST elsewhere: b's claim
    meets FIRST's row on the MAC key once a commits (IntegrityError); b's group runs again, and
    its claim is lost to a's committed live lease of FIRST (deleting it would free an address
    FIRST may hold: see the late-claim test), which b learns; FIRST holds one address."""
    a_db = open_database(store_at("leases"))
    b = LeaseStore(store_at("leases"), server="b")
    other = IPv4Address("10.0.2.20")
    a_db.begin()
    a_db.execute("INSERT INTO leases (mac, ip, node, expires, state, relay_info, server) "
                 "VALUES (?, ?, NULL, ?, 'BOUND', NULL, 'a')",
                 (str(FIRST), str(ADDRESS), NOW + 600))
    b.stage(bind(FIRST, other), now=NOW)
    with ThreadPoolExecutor(1) as thread:
        writing = thread.submit(b.write, b.take_pending())
        time.sleep(0.5)  # b waits on a's row (PostgreSQL) or on the write lock (SQLite)
        a_db.execute("COMMIT")
        lost = writing.result(timeout=30)
    assert [(c.mac, c.address) for c in lost] == [(FIRST, other)]
    assert lost[0].holder is not None and lost[0].holder.address == ADDRESS
    assert rows(store_at) == [(str(FIRST), str(ADDRESS), "a")]
    a_db.close()
    b.close()


def test_a_late_claim_does_not_free_the_address_the_client_took_from_the_other_server(
        store_at: StoreAt) -> None:
    # FIRST asked a for ADDRESS, gave up (a read the REQUEST late, under load), then took
    # b's ACK for LATER. a's claim must not delete that lease: the address would be free in
    # the database while FIRST holds it, and a server would hand it out again.
    a = LeaseStore(store_at("leases"), server="a")
    b = LeaseStore(store_at("leases"), server="b")
    later = IPv4Address("10.0.2.11")
    b.stage(bind(FIRST, later), now=NOW)
    assert b.write(b.take_pending()) == []
    a.stage(bind(FIRST), now=NOW + 1)
    lost = a.write(a.take_pending())
    assert [(c.mac, c.address) for c in lost] == [(FIRST, ADDRESS)]
    a.settle(lost)  # a learns the client's lease: its next OFFER is that address
    held = a.lease_for_mac(FIRST)
    assert held is not None and held.address == later
    assert a.lease_for_address(ADDRESS) is None
    assert a.lease_for_address(later) == held
    assert rows(store_at) == [(str(FIRST), str(later), "b")]
    # So the address stays FIRST's: another client's claim of it through a is lost.
    a.stage(bind(SECOND, later), now=NOW + 2)
    assert [(c.mac, c.address) for c in a.write(a.take_pending())] == [(SECOND, later)]
    # FIRST's own REQUEST for it through a (its next round) wins, and a's own old lease of
    # a client moves with it as before.
    a.stage(bind(FIRST, later, expires=NOW + 900), now=NOW + 3)
    assert a.write(a.take_pending()) == []
    a.stage(bind(FIRST, expires=NOW + 900), now=NOW + 4)
    assert a.write(a.take_pending()) == []
    assert rows(store_at) == [(str(FIRST), str(ADDRESS), "a")]
    a.close()
    b.close()


def test_a_late_offer_to_a_client_the_other_server_bound_does_not_free_its_address(
        store_at: StoreAt) -> None:
    # FIRST took b's ACK for ADDRESS; a learnt it (its late claim for FIRST was lost) and
    # then read FIRST's DISCOVER late: a offers FIRST its address. The offer must not delete
    # b's row: a forgets its offer when FIRST's REQUEST names b, and the address would then be
    # free in the database and in a's view while FIRST holds it (the storm test saw a give
    # such an address to a second client).
    a = LeaseStore(store_at("leases"), server="a")
    b = LeaseStore(store_at("leases"), server="b")
    b.stage(bind(FIRST), now=NOW)
    assert b.write(b.take_pending()) == []
    a.stage(bind(FIRST, IPv4Address("10.0.2.11")), now=NOW + 1)
    a.settle(a.write(a.take_pending()))
    a.stage(LeaseChange(action=LeaseAction.BIND, mac=FIRST, address=ADDRESS, node=None,
                        expires=NOW + 61, state=LeaseState.OFFERED), now=NOW + 2)
    a.write(a.take_pending())
    assert rows(store_at) == [(str(FIRST), str(ADDRESS), "b")]
    a.stage(LeaseChange(action=LeaseAction.RELEASE, mac=FIRST, address=ADDRESS,
                        expires=NOW + 2))
    a.stage(bind(SECOND), now=NOW + 3)
    assert [(c.mac, c.address) for c in a.write(a.take_pending())] == [(SECOND, ADDRESS)]
    assert rows(store_at) == [(str(FIRST), str(ADDRESS), "b")]
    # Its own bound lease, or an expired one, an offer still replaces (one server's case).
    a.stage(bind(SECOND, IPv4Address("10.0.2.12")), now=NOW + 4)
    assert a.write(a.take_pending()) == []
    a.stage(LeaseChange(action=LeaseAction.BIND, mac=SECOND, address=IPv4Address("10.0.2.13"),
                        node=None, expires=NOW + 65, state=LeaseState.OFFERED), now=NOW + 5)
    a.write(a.take_pending())
    assert rows(store_at) == [(str(FIRST), str(ADDRESS), "b")]
    a.close()
    b.close()
