"""Pools per relayed segment (`NetworkConfig.segments`, setting `relay_pools`): an unknown client
relayed from a segment's relay gets that segment's address, mask and router; its unicast RENEW
(not relayed: giaddr 0, ciaddr on the segment) is ACKed, not NAKed as off the network; the
servers' own segment is answered as before, and known nodes only on it."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv4Network

from oneroot.net import MacAddress
from oneroot.proto.dhcp import (
    Decision,
    DhcpPacket,
    LeaseState,
    MessageType,
    NetworkConfig,
    NodeBoot,
    OptionCode,
    respond,
)
from oneroot.testing.dhcpmsg import MemoryLeases, client_message

NOW = 1000.0
SERVER = IPv4Address("10.0.0.1")
RELAY = IPv4Address("10.1.5.1")
STRANGER = MacAddress.parse("02:00:00:00:05:01")
KNOWN = MacAddress.parse("02:00:00:00:05:02")
NODE = NodeBoot(name="n1", address=IPv4Address("10.0.0.11"), bios_file="undionly.kpxe",
                uefi_file="ipxe.efi", ipxe_url="http://10.0.0.1/boot/n1.ipxe")
MAIN = NetworkConfig(server_address=SERVER, subnet=IPv4Network("10.0.0.0/24"),
                     router=IPv4Address("10.0.0.254"),
                     pool=(IPv4Address("10.0.0.100"), IPv4Address("10.0.0.199")))
SEGMENT = dataclasses.replace(MAIN, subnet=IPv4Network("10.1.5.0/24"), router=RELAY,
                              pool=(IPv4Address("10.1.5.100"), IPv4Address("10.1.5.199")))
CONFIG = dataclasses.replace(MAIN, segments=(SEGMENT,))


def decide(packet: DhcpPacket, leases: MemoryLeases) -> Decision:
    decision = respond(packet, now=NOW, config=CONFIG, leases=leases,
                       lookup={KNOWN: NODE}.get)
    leases.apply(decision.lease_change)
    return decision


def message(mtype: MessageType, mac: MacAddress, *, giaddr: IPv4Address = IPv4Address(0),
            ciaddr: IPv4Address = IPv4Address(0), **options: IPv4Address) -> DhcpPacket:
    packet = client_message(mtype, mac=mac.packed, xid=3, giaddr=giaddr, **options)
    return dataclasses.replace(packet, ciaddr=ciaddr)


def test_a_relayed_client_gets_its_segments_address_mask_and_router() -> None:
    leases = MemoryLeases()
    offer = decide(message(MessageType.DISCOVER, STRANGER, giaddr=RELAY), leases)
    assert offer.reply is not None
    address = offer.reply.yiaddr
    assert address in SEGMENT.subnet and SEGMENT.pool is not None
    assert SEGMENT.pool[0] <= address <= SEGMENT.pool[1]
    assert offer.reply.options.get(OptionCode.SUBNET_MASK) == SEGMENT.subnet.netmask.packed
    assert offer.reply.options.get(OptionCode.ROUTER) == RELAY.packed
    assert offer.reply.options.get(OptionCode.SERVER_ID) == SERVER.packed
    ack = decide(message(MessageType.REQUEST, STRANGER, giaddr=RELAY, requested=address,
                         server_id=SERVER), leases)
    assert ack.reply is not None and ack.reply.message_type is MessageType.ACK
    assert leases.by_mac[STRANGER].state is LeaseState.BOUND
    # Its RENEW comes straight to the server (unicast, not relayed): ACKed on its segment.
    renew = decide(message(MessageType.REQUEST, STRANGER, ciaddr=address), leases)
    assert renew.reply is not None and renew.reply.message_type is MessageType.ACK
    assert renew.reply.options.get(OptionCode.ROUTER) == RELAY.packed
    # Relayed from its segment, an address of the servers' own is the wrong network.
    wrong = decide(message(MessageType.REQUEST, STRANGER, giaddr=RELAY,
                           requested=IPv4Address("10.0.0.150")), leases)
    assert wrong.reply is not None and wrong.reply.message_type is MessageType.NAK


def test_the_servers_own_segment_and_known_nodes_on_it_are_answered_as_before() -> None:
    leases = MemoryLeases()
    own = decide(message(MessageType.DISCOVER, STRANGER), leases)
    assert own.reply is not None and own.reply.yiaddr in MAIN.subnet
    assert own.reply.options.get(OptionCode.ROUTER) == IPv4Address("10.0.0.254").packed
    for giaddr in (IPv4Address(0), IPv4Address("10.0.0.250")):  # direct, or a relay on it
        node = decide(message(MessageType.DISCOVER, KNOWN, giaddr=giaddr), leases)
        assert node.reply is not None and node.reply.yiaddr == NODE.address
        assert node.reply.options.get(OptionCode.SUBNET_MASK) == MAIN.subnet.netmask.packed


def test_a_known_node_relayed_from_another_segment_gets_nothing() -> None:
    """A node's fixed address is a reservation on the subnet only (Kea, ISC dhcpd): from a
    pool segment's relay, or a relay this server has no segment for, nothing (said why) —
    neither its fixed address, unusable there, nor a pool address."""
    leases = MemoryLeases()
    for relay in (RELAY, IPv4Address("10.1.9.1")):
        for packet in (message(MessageType.DISCOVER, KNOWN, giaddr=relay),
                       message(MessageType.REQUEST, KNOWN, giaddr=relay,
                               requested=NODE.address, server_id=SERVER),
                       message(MessageType.REQUEST, KNOWN, giaddr=relay,
                               requested=NODE.address),
                       message(MessageType.INFORM, KNOWN, giaddr=relay, ciaddr=NODE.address)):
            decision = decide(packet, leases)
            assert (decision.reply, decision.lease_change, decision.unserved_relay,
                    decision.unserved_node) == (None, None, relay, NODE.name), decision
            assert "not on" in decision.reason
    # Its unicast RENEW (not relayed) is answered as before.
    renew = decide(message(MessageType.REQUEST, KNOWN, ciaddr=NODE.address), leases)
    assert renew.reply is not None and renew.reply.message_type is MessageType.ACK


def test_a_relay_with_no_pool_outside_the_subnet_gets_nothing_for_its_pool_clients() -> None:
    """The main pool's addresses are unusable on another segment: silence, said why."""
    leases = MemoryLeases()
    unserved = IPv4Address("10.1.9.1")  # no segment of its own, outside the subnet
    wanted = IPv4Address("10.0.0.150")
    for packet in (message(MessageType.DISCOVER, STRANGER, giaddr=unserved),
                   message(MessageType.REQUEST, STRANGER, giaddr=unserved, requested=wanted,
                           server_id=SERVER),
                   message(MessageType.REQUEST, STRANGER, giaddr=unserved, requested=wanted),
                   message(MessageType.INFORM, STRANGER, giaddr=unserved, ciaddr=wanted)):
        decision = decide(packet, leases)
        assert (decision.reply, decision.lease_change, decision.unserved_relay) == (
            None, None, unserved), decision
        assert "no pool" in decision.reason
    # A relay inside the subnet serves the main pool; with discovery off nothing is refused
    # that was ever offered.
    inside = decide(message(MessageType.DISCOVER, STRANGER, giaddr=IPv4Address("10.0.0.250")),
                    leases)
    assert inside.reply is not None and inside.reply.yiaddr in MAIN.subnet
    off = respond(message(MessageType.DISCOVER, STRANGER, giaddr=unserved), now=NOW,
                  config=dataclasses.replace(CONFIG, pool=None, segments=()),
                  leases=leases, lookup={}.get)
    assert (off.reply, off.unserved_relay) == (None, None)
