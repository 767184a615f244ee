"""A pool client bound by server A renews through server B, whose view never saw that lease
(B loaded its leases before A bound it): B reads the client's and the address's rows from the
shared store and answers as RFC 2131 §4.3.2 says, on both engines. The ACK is a claim in B's
group commit, so it stays race-free with the pool allocator of every server."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from oneroot.inventory.leases import LeaseStore
from oneroot.net import MacAddress
from oneroot.proto.dhcp import (
    Decision,
    LeaseAction,
    LeaseChange,
    LeaseState,
    MessageType,
    NetworkConfig,
    parse_packet,
    respond,
)
from oneroot.testing.dhcpmsg import client_message
from oneroot.testing.postgres import StoreAt

NOW = 1000.0
ADDRESS = IPv4Address("10.0.2.10")
CLIENT = MacAddress.parse("02:00:00:00:00:01")
OTHER = MacAddress.parse("02:00:00:00:00:02")
B = NetworkConfig(server_address=IPv4Address("10.0.0.3"), subnet=IPv4Network("10.0.0.0/16"),
                  pool=(IPv4Address("10.0.2.0"), IPv4Address("10.0.2.255")), lease_time=600)
HOW = ["init-reboot", "renewing"]


def bind(mac: MacAddress, expires: float = NOW + 600) -> LeaseChange:
    return LeaseChange(action=LeaseAction.BIND, mac=mac, address=ADDRESS, expires=expires,
                       state=LeaseState.BOUND)


def decide(store: LeaseStore, mac: MacAddress, how: str, *, reread: bool = True
           ) -> Decision:
    """B's decision: with a partial view first, then (as the DHCP service does) after reading
    the rows the decision asks for."""
    packet = parse_packet(_request(mac, how))
    first = respond(packet, now=NOW, config=B, lookup=lambda m: None, leases=store,
                    view_complete=False)
    if first.reread is None or not reread:
        return first
    store.learn(store.read_leases([(mac, first.reread)]), NOW)
    return respond(packet, now=NOW, config=B, lookup=lambda m: None, leases=store)


def _request(mac: MacAddress, how: str) -> bytes:
    packet = client_message(MessageType.REQUEST, mac=mac.packed, xid=9,
                            requested=ADDRESS if how == "init-reboot" else None)
    data = bytearray(packet.to_bytes())
    if how == "renewing":
        data[12:16] = ADDRESS.packed  # ciaddr
    return bytes(data)


def stores(store_at: StoreAt) -> tuple[LeaseStore, LeaseStore]:
    """B first (its view loaded empty), then A, which binds the client."""
    b = LeaseStore(store_at("leases"), server="b")
    a = LeaseStore(store_at("leases"), server="a")
    return a, b


@pytest.mark.parametrize("how", HOW)
def test_b_acks_the_lease_a_bound_and_its_claim_wins(store_at: StoreAt, how: str) -> None:
    a, b = stores(store_at)
    a.stage(bind(CLIENT), now=NOW)
    assert a.write(a.take_pending()) == []
    assert decide(b, CLIENT, how, reread=False).reply is None  # what B did before
    d = decide(b, CLIENT, how)
    assert d.reply is not None and d.reply.message_type is MessageType.ACK
    assert d.reply.yiaddr == ADDRESS
    assert d.lease_change is not None
    b.stage(d.lease_change, now=NOW)
    assert b.write(b.take_pending()) == []  # the client's own address: B's claim wins
    assert b.lease_for_mac(CLIENT) is not None
    a.close()
    b.close()


@pytest.mark.parametrize("how", HOW)
def test_b_naks_an_address_the_store_gives_another_client(store_at: StoreAt, how: str
                                                          ) -> None:
    a, b = stores(store_at)
    a.stage(bind(OTHER), now=NOW)
    a.commit()
    d = decide(b, CLIENT, how)
    assert d.reply is not None and d.reply.message_type is MessageType.NAK, d.reason
    a.close()
    b.close()


@pytest.mark.parametrize("how", HOW)
def test_b_is_silent_without_a_live_record(store_at: StoreAt, how: str) -> None:
    a, b = stores(store_at)
    assert decide(b, CLIENT, how).reply is None  # no row at all
    a.stage(bind(CLIENT, expires=NOW - 1), now=NOW - 700)  # expired: the address is free
    a.commit()
    d = decide(b, CLIENT, how)
    assert d.reply is None and d.reason == "no record of this client"
    assert b.lease_for_mac(CLIENT) is None
    a.close()
    b.close()


def test_a_claim_on_the_reread_address_stays_race_free(store_at: StoreAt) -> None:
    """B learnt that CLIENT holds the address; A meanwhile gives it up and OTHER takes it
    through A: B's ACK is a claim, and the store refuses it."""
    a, b = stores(store_at)
    a.stage(bind(CLIENT), now=NOW)
    a.commit()
    d = decide(b, CLIENT, "renewing")
    assert d.lease_change is not None
    a.stage(LeaseChange(action=LeaseAction.RELEASE, mac=CLIENT, address=ADDRESS), now=NOW)
    a.commit()
    a.stage(bind(OTHER), now=NOW)
    assert a.commit() == []
    b.stage(d.lease_change, now=NOW)
    lost = b.write(b.take_pending())
    assert [(c.mac, c.holder.mac if c.holder else None) for c in lost] == [(CLIENT, OTHER)]
    a.close()
    b.close()


@pytest.mark.parametrize("action", [LeaseAction.RELEASE, LeaseAction.DECLINE])
def test_a_release_or_decline_ends_the_lease_on_its_address_only(store_at: StoreAt,
                                                                  action: LeaseAction) -> None:
    """B's view still has the client on ADDRESS (bound by B, expired since); A has bound the
    client another address meanwhile. The client's late RELEASE (or DECLINE) of ADDRESS
    through B must not delete the lease A bound."""
    moved = IPv4Address("10.0.2.11")
    b = LeaseStore(store_at("leases"), server="b")
    b.stage(bind(CLIENT, expires=NOW + 1), now=NOW)
    assert b.commit() == []
    a = LeaseStore(store_at("leases"), server="a")
    a.stage(LeaseChange(action=LeaseAction.BIND, mac=CLIENT, address=moved,
                        expires=NOW + 600, state=LeaseState.BOUND), now=NOW + 10)
    assert a.commit() == []
    a.close()
    b.stage(LeaseChange(action=action, mac=CLIENT, address=ADDRESS, expires=NOW + 600),
            now=NOW + 20)
    assert b.commit() == []
    b.close()
    fresh = LeaseStore(store_at("leases"))
    held = fresh.lease_for_mac(CLIENT)
    fresh.close()
    assert held is not None and held.address == moved
