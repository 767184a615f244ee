"""A server that holds a peer's service address (`ha_servers`; keepalived moved it after the
peer's death) answers as that peer: a datagram sent to that address (its alias socket), or a
REQUEST naming it as server id, gets replies that carry it as server id (busybox udhcpc
ignores a NAK from any server id but the one it chose). A REQUEST naming a peer whose address
is not held here is another server's: silence. And on a shared database, a RELEASE or DECLINE
of a lease another server bound is read from the database first, then applied."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import sys
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from oneroot.inventory.leases import LeaseStore
from oneroot.net import MacAddress
from oneroot.proto.dhcp import (
    LeaseAction,
    LeaseChange,
    LeaseState,
    MessageType,
    NetworkConfig,
    OptionCode,
    ReplyEvent,
    parse_packet,
)
from oneroot.serve.dhcp import DhcpService
from oneroot.serve.dhcp_records import Reply as _Reply
from oneroot.serve.dhcp_sockets import PeerIdentities, holds_address
from oneroot.testing.dhcpmsg import client_message
from oneroot.testing.netns import available, linked_namespaces
from oneroot.testing.postgres import StoreAt

OURS = IPv4Address("10.0.0.103")  # this server's service address
PEER = IPv4Address("10.0.0.102")  # the peer's, which this server may hold
CLIENT = MacAddress.parse("02:00:00:00:00:07")
OTHER = MacAddress.parse("02:00:00:00:00:08")
RELAY = IPv4Address("127.0.0.1")  # replies go to the relay: loopback, nothing leaves the host
OPTION82 = b"\x01\x04port"
MAIN = NetworkConfig(server_address=IPv4Address("10.0.0.3"), server_id=OURS, peers=(PEER,),
                     subnet=IPv4Network("10.0.0.0/16"),
                     pool=(IPv4Address("10.0.1.0"), IPv4Address("10.0.1.255")))
# The relay's segment and its pool (setting relay_pools): a relay outside the subnet without
# one gets nothing
NETWORK = dataclasses.replace(MAIN, segments=(dataclasses.replace(
    MAIN, subnet=IPv4Network("127.0.0.0/8"), router=RELAY, peers=(),
    pool=(IPv4Address("127.0.1.0"), IPv4Address("127.0.1.255"))),))
ADDRESS = IPv4Address("127.0.1.7")


def service(leases: LeaseStore, *, held: bool) -> DhcpService:
    dhcp = DhcpService(interface="lo", server_address=NETWORK.server_address, network=NETWORK,
                       lookup=lambda mac: None, leases=leases, on_event=lambda event: None)
    dhcp.identities = PeerIdentities(holds=lambda address: held and address == PEER)
    return dhcp


def answer(dhcp: DhcpService, data: bytes, alias: IPv4Address | None = None
           ) -> tuple[MessageType | None, bytes | None]:
    reply, _ = dhcp._decide(data, (str(RELAY), 67), 67, time.time(), alias=alias)
    if reply is None:
        return None, None
    packet = parse_packet(reply.data)
    return packet.message_type, packet.options.get(OptionCode.SERVER_ID)


def selecting(server_id: IPv4Address, mac: MacAddress = CLIENT) -> bytes:
    return client_message(MessageType.REQUEST, mac=mac.packed, xid=5, requested=ADDRESS,
                          server_id=server_id, giaddr=RELAY).to_bytes()


def renewing(address: IPv4Address, mac: MacAddress = CLIENT) -> bytes:
    packet = client_message(MessageType.REQUEST, mac=mac.packed, xid=6, giaddr=RELAY)
    return dataclasses.replace(packet, ciaddr=address).to_bytes()


def test_a_request_naming_a_held_peer_is_answered_as_that_peer(tmp_path: Path) -> None:
    held = service(LeaseStore(tmp_path / "held.db"), held=True)
    assert answer(held, selecting(PEER)) == (MessageType.ACK, PEER.packed)
    assert answer(held, selecting(OURS, OTHER)) == (MessageType.NAK, OURS.packed)  # taken
    # Not held here: the peer is alive and it is its client (RFC 2131: silence).
    alive = service(LeaseStore(tmp_path / "alive.db"), held=False)
    assert answer(alive, selecting(PEER)) == (None, None)


def test_a_datagram_sent_to_a_held_peer_address_is_answered_as_that_peer(tmp_path: Path
                                                                         ) -> None:
    dhcp = service(LeaseStore(tmp_path / "l.db"), held=True)
    dhcp.leases.apply(LeaseChange(action=LeaseAction.BIND, mac=OTHER, address=ADDRESS,
                                  expires=time.time() + 600, state=LeaseState.BOUND))
    # A renewal of an address another client holds: the NAK the client takes (its server's
    # id), and on this server's own sockets its own id, as before.
    assert answer(dhcp, renewing(ADDRESS), alias=PEER) == (MessageType.NAK, PEER.packed)
    assert answer(dhcp, renewing(ADDRESS)) == (MessageType.NAK, OURS.packed)
    assert answer(dhcp, renewing(ADDRESS, OTHER), alias=PEER) == (MessageType.ACK, PEER.packed)


def nak_identities(dhcp: DhcpService, data: bytes) -> list[tuple[MessageType | None, bytes]]:
    """What every reply to `data` is and names as server id, in the order sent."""
    sent: list[_Reply] = []
    dhcp._send = sent.append  # type: ignore[method-assign]  # the extra copies go at once
    reply, _ = dhcp._decide(data, (str(RELAY), 67), 67, time.time())
    packets = [parse_packet(r.data) for r in [*sent, *([reply] if reply else [])]]
    return [(p.message_type, p.options[OptionCode.SERVER_ID]) for p in packets]


def test_a_nak_to_a_request_naming_no_server_goes_under_every_identity_held(tmp_path: Path
                                                                           ) -> None:
    """REBINDING (ciaddr, broadcast) and INIT-REBOOT (50, no ciaddr) name no server: a NAK
    is sent under the held peer's identifier too (the client may be the dead peer's, and
    udhcpc takes a NAK only from its own server), never under one not held."""
    rebinding = renewing(ADDRESS)  # no option 54; broadcast rather than unicast
    init_reboot = client_message(MessageType.REQUEST, mac=CLIENT.packed, xid=7,
                                 requested=ADDRESS, giaddr=RELAY).to_bytes()
    for held, names in ((True, [PEER.packed, OURS.packed]), (False, [OURS.packed])):
        dhcp = service(LeaseStore(tmp_path / f"{held}.db"), held=held)
        dhcp.leases.apply(LeaseChange(action=LeaseAction.BIND, mac=OTHER, address=ADDRESS,
                                      expires=time.time() + 600, state=LeaseState.BOUND))
        for data in (rebinding, init_reboot):
            assert nak_identities(dhcp, data) == [(MessageType.NAK, n) for n in names]
        # An ACK is one reply, under this server's own identifier; a NAK to a REQUEST that
        # names a server, one under that name.
        assert nak_identities(dhcp, renewing(ADDRESS, OTHER)) == [(MessageType.ACK,
                                                                   OURS.packed)]
        assert nak_identities(dhcp, selecting(OURS)) == [(MessageType.NAK, OURS.packed)]
        # The NAK of a claim the database refused at the write, likewise.
        sent: list[_Reply] = []
        dhcp._send = sent.append  # type: ignore[method-assign]
        lost = dhcp._nak_lost(_Reply(b"", ("255.255.255.255", 68), 67, ReplyEvent(
            kind="dhcp.ack", mac=CLIENT, node=None, address=ADDRESS, file=None), time.time(),
            parse_packet(rebinding)))
        assert [parse_packet(r.data).options[OptionCode.SERVER_ID] for r in [*sent, lost]] \
            == names


def test_whether_a_peer_is_held_is_asked_at_most_once_a_second() -> None:
    asked: list[IPv4Address] = []
    identities = PeerIdentities(holds=lambda address: asked.append(address) is None)
    assert identities.named(NETWORK, PEER, 100.0) == PEER
    assert identities.named(NETWORK, PEER, 100.5) == PEER
    assert identities.named(NETWORK, OURS, 100.5) is None  # not a peer's: never asked
    assert identities.named(NETWORK, None, 100.5) is None
    assert identities.named(NETWORK, PEER, 101.5) == PEER
    assert asked == [PEER, PEER]
    assert identities.held(NETWORK, 101.6) == [PEER]  # the same cache
    assert asked == [PEER, PEER]
    config = identities.config(NETWORK, PEER)
    assert (config.identifier, config.peers) == (PEER, ())
    assert identities.config(NETWORK, PEER) is config  # one per network, reused
    segment = dataclasses.replace(NETWORK, subnet=IPv4Network("10.9.5.0/24"))
    relayed = identities.config(dataclasses.replace(NETWORK, segments=(segment,)), PEER)
    assert [s.identifier for s in relayed.segments] == [PEER]  # its relayed segments too


def test_holds_address_asks_the_kernel() -> None:
    assert holds_address(IPv4Address("127.0.0.1"))
    assert not holds_address(IPv4Address("192.0.2.77"))  # TEST-NET-1: never configured here


@pytest.mark.skipif(not available(), reason="needs root and iproute2")
def test_holds_address_sees_a_secondary_address() -> None:
    """A moved service address is a secondary one on the survivor's interface (its host
    address came first): the kernel routes to it from the primary, yet it is held."""
    with linked_namespaces("10.96.7.3/24", "10.96.7.50/24") as link:
        link.server.add_address("10.96.7.102/24")  # after 10.96.7.3: secondary
        probe = ("import sys; from ipaddress import IPv4Address as A; "
                 "from oneroot.serve.dhcp_sockets import holds_address as h; "
                 "print([h(A(a)) for a in sys.argv[1:]])")
        held = link.server.ns.run(sys.executable, "-c", probe, "10.96.7.3", "10.96.7.102",
                                  "10.96.7.50", "10.96.7.9").stdout.strip()
    assert held == "[True, True, False, False]"


# --- a RELEASE or DECLINE of a lease another server bound, on one shared database ---

def bound_by_a(store_at: StoreAt) -> None:
    a = LeaseStore(store_at("leases"), server="a")
    a.stage(LeaseChange(action=LeaseAction.BIND, mac=CLIENT, address=ADDRESS,
                        expires=time.time() + 600, state=LeaseState.BOUND,
                        relay_info=OPTION82))
    assert a.commit() == []
    a.close()


def through_b(b: DhcpService, data: bytes) -> None:
    async def run() -> None:
        b._loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            b._sockets[67] = sock
            b._serve([(data, (str(RELAY), 67))], 67)
            for _ in range(500):  # the read and the write run in worker threads
                if not (b._rereads or b._rereading or b._writing):
                    break
                await asyncio.sleep(0.02)
            b._sockets.clear()
    asyncio.run(run())


def rows(store_at: StoreAt) -> tuple[object, bool]:
    """The database's lease of CLIENT and whether ADDRESS is quarantined, as a new server
    reads them."""
    fresh = LeaseStore(store_at("leases"))
    try:
        return fresh.lease_for_mac(CLIENT), fresh.is_declined(ADDRESS, time.time())
    finally:
        fresh.close()


def test_b_applies_a_release_of_a_lease_a_bound(store_at: StoreAt) -> None:
    store = LeaseStore(store_at("leases"), server="b")  # loaded before A binds the client
    b = service(store, held=True)
    bound_by_a(store_at)
    release = client_message(MessageType.RELEASE, mac=CLIENT.packed, xid=8, server_id=PEER)
    through_b(b, dataclasses.replace(release, ciaddr=ADDRESS).to_bytes())
    lease, _ = rows(store_at)
    if store.remote:
        assert lease is None and b.rereads == 1  # freed: any server may hand it out
    else:  # SQLite: one server per file, its view is the table: nothing read, as before
        assert lease is not None and b.rereads == 0
    store.close()


def test_b_applies_a_decline_of_a_lease_a_bound(store_at: StoreAt) -> None:
    store = LeaseStore(store_at("leases"), server="b")
    b = service(store, held=True)
    bound_by_a(store_at)
    decline = client_message(MessageType.DECLINE, mac=CLIENT.packed, xid=9, requested=ADDRESS,
                             server_id=PEER, giaddr=RELAY, extra={82: OPTION82})
    forged = client_message(MessageType.DECLINE, mac=CLIENT.packed, xid=9, requested=ADDRESS,
                            server_id=PEER, giaddr=RELAY, extra={82: b"\x01\x04evil"})
    through_b(b, forged.to_bytes())  # read, then refused: not the relay it was bound through
    lease, declined = rows(store_at)
    assert lease is not None and not declined
    through_b(b, decline.to_bytes())
    lease, declined = rows(store_at)
    if store.remote:
        assert (lease, declined) == (None, True)
        assert store.is_declined(ADDRESS, time.time())
    else:
        assert lease is not None and not declined
    store.close()
