"""The responder's decision table: every message type, boot file choice, proxy mode, pool."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network

import pytest

from oneroot.net import MacAddress
from oneroot.proto.dhcp import (
    BROADCAST_FLAG,
    PXE_PORT,
    BootOp,
    Decision,
    DhcpMode,
    DhcpOptions,
    DhcpPacket,
    Lease,
    LeaseAction,
    LeaseChange,
    LeaseState,
    MessageType,
    NetworkConfig,
    NodeBoot,
    OptionCode,
    decode_suboptions,
    respond,
)
from oneroot.testing.dhcpmsg import MemoryLeases

SERVER = IPv4Address("10.0.0.1")
NOW = 1_000_000.0
KNOWN = MacAddress.parse("52:54:00:00:00:01")
STRANGER = MacAddress.parse("52:54:00:00:00:99")
NODE = NodeBoot(name="node01", address=IPv4Address("10.0.0.11"), bios_file="undionly.kpxe",
                uefi_file="ipxe.efi", ipxe_url="http://10.0.0.1:8080/boot/node01.ipxe")
CONFIG = NetworkConfig(server_address=SERVER, subnet=IPv4Network("10.0.0.0/24"),
                       router=IPv4Address("10.0.0.254"),
                       dns=(IPv4Address("10.0.0.2"), IPv4Address("10.0.0.3")),
                       domain="cluster.test", lease_time=3600)
POOL = (IPv4Address("10.0.0.100"), IPv4Address("10.0.0.103"))


def lookup(mac: MacAddress) -> NodeBoot | None:
    return NODE if mac == KNOWN else None


def request(mtype: MessageType, mac: MacAddress = KNOWN, *, ciaddr: str = "0.0.0.0",
            giaddr: str = "0.0.0.0", flags: int = 0, **options: bytes) -> DhcpPacket:
    opts = [(int(OptionCode.MESSAGE_TYPE), bytes((mtype,)))]
    opts += [(int(name[1:]), value) for name, value in options.items()]
    return DhcpPacket(op=BootOp.REQUEST, xid=0xABCDEF, chaddr=mac.packed, flags=flags,
                      ciaddr=IPv4Address(ciaddr), giaddr=IPv4Address(giaddr),
                      options=DhcpOptions(opts))


def decide(packet: DhcpPacket, *, config: NetworkConfig = CONFIG,
           leases: MemoryLeases | None = None, port: int = 67,
           source: tuple[IPv4Address, int] | None = None) -> Decision:
    return respond(packet, now=NOW, config=config, lookup=lookup,
                   leases=leases if leases is not None else MemoryLeases(), port=port,
                   source=source, is_reserved=lambda a: a == NODE.address)


def mtype_of(decision: Decision) -> MessageType | None:
    return None if decision.reply is None else decision.reply.message_type


def ip(text: str) -> bytes:
    return IPv4Address(text).packed


# --- full mode, known node ---

def test_discover_known_gets_offer_with_everything() -> None:
    d = decide(request(MessageType.DISCOVER))
    assert d.reply is not None and mtype_of(d) is MessageType.OFFER
    reply = d.reply
    assert reply.op is BootOp.REPLY and reply.xid == 0xABCDEF
    assert reply.yiaddr == NODE.address
    assert reply.siaddr == SERVER
    assert reply.file == b"undionly.kpxe"
    o = reply.options
    assert o[OptionCode.SERVER_ID] == SERVER.packed
    assert o[OptionCode.SUBNET_MASK] == ip("255.255.255.0")
    assert o[OptionCode.ROUTER] == ip("10.0.0.254")
    assert o[OptionCode.DNS_SERVERS] == ip("10.0.0.2") + ip("10.0.0.3")
    assert o[OptionCode.HOSTNAME] == b"node01"
    assert o[OptionCode.DOMAIN_NAME] == b"cluster.test"
    assert o[OptionCode.BROADCAST_ADDRESS] == ip("10.0.0.255")
    assert o[OptionCode.LEASE_TIME] == (3600).to_bytes(4, "big")
    assert o[OptionCode.TFTP_SERVER_NAME] == b"10.0.0.1"
    assert o[OptionCode.BOOTFILE_NAME] == b"undionly.kpxe"
    assert OptionCode.VENDOR_CLASS not in o and OptionCode.VENDOR_SPECIFIC not in o
    assert d.lease_change is None  # the node's address is fixed: nothing to hold for an offer
    assert d.event is not None and d.event.kind == "dhcp.offer" and d.event.node == "node01"
    assert d.destination is not None and d.destination.broadcast
    assert (str(d.destination.address), d.destination.port) == ("255.255.255.255", 68)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, "undionly.kpxe"),
        ({"o93": b"\x00\x00"}, "undionly.kpxe"),
        ({"o93": b"\x00\x07"}, "ipxe.efi"),
        ({"o93": b"\x00\x09"}, "ipxe.efi"),
        ({"o93": b"\x00\x06"}, "ipxe.efi"),
        ({"o93": b"\x00\x07", "o77": b"iPXE"}, "http://10.0.0.1:8080/boot/node01.ipxe"),
        ({"o77": b"iPXE"}, "http://10.0.0.1:8080/boot/node01.ipxe"),
    ],
)
def test_boot_file_by_architecture_and_user_class(options: dict[str, bytes],
                                                   expected: str) -> None:
    d = decide(request(MessageType.DISCOVER, **options))
    assert d.reply is not None
    assert d.reply.options[OptionCode.BOOTFILE_NAME] == expected.encode()
    assert d.reply.file == expected.encode()


def test_pxe_client_gets_vendor_options_and_uuid_echo() -> None:
    uuid = b"\x00" + bytes(range(16))
    d = decide(request(MessageType.DISCOVER, o60=b"PXEClient:Arch:00007:UNDI:003016",
                       o93=b"\x00\x07", o97=uuid))
    assert d.reply is not None
    o = d.reply.options
    assert o[OptionCode.VENDOR_CLASS] == b"PXEClient"
    assert decode_suboptions(43, o[OptionCode.VENDOR_SPECIFIC]) == {6: b"\x08"}
    assert o[OptionCode.CLIENT_UUID] == uuid


def test_ipxe_gets_no_proxydhcp_wait() -> None:
    d = decide(request(MessageType.DISCOVER, o77=b"iPXE", o60=b"PXEClient:Arch:00000"))
    assert d.reply is not None
    assert decode_suboptions(175, d.reply.options[OptionCode.IPXE_ENCAP]) == {0xB0: b"\x01"}


def test_options_answered_in_requested_order() -> None:
    d = decide(request(MessageType.DISCOVER, o55=bytes((67, 12, 6, 3, 1, 200, 66))))
    assert d.reply is not None
    codes = list(d.reply.options)
    assert codes[:2] == [53, 54]
    assert codes[2:8] == [67, 12, 6, 3, 1, 66]  # 200 is not ours: skipped
    assert 200 not in codes


def test_relay_agent_info_is_echoed_last_and_reply_goes_to_relay() -> None:
    info = b"\x01\x04port\x02\x03abc"
    d = decide(request(MessageType.DISCOVER, giaddr="10.0.0.254", o82=info))
    assert d.reply is not None
    assert list(d.reply.options)[-1] == OptionCode.RELAY_AGENT_INFO
    assert d.reply.options[OptionCode.RELAY_AGENT_INFO] == info
    assert d.reply.giaddr == IPv4Address("10.0.0.254")
    assert d.destination is not None
    assert (str(d.destination.address), d.destination.port, d.destination.broadcast) == (
        "10.0.0.254", 67, False)


def test_broadcast_flag_is_kept() -> None:
    d = decide(request(MessageType.DISCOVER, flags=BROADCAST_FLAG))
    assert d.reply is not None and d.reply.broadcast


def test_request_selecting_ours_is_acked_and_leased_before_sending() -> None:
    d = decide(request(MessageType.REQUEST, o54=SERVER.packed, o50=NODE.address.packed))
    assert mtype_of(d) is MessageType.ACK
    assert d.reply is not None and d.reply.yiaddr == NODE.address
    assert d.lease_change == LeaseChange(action=LeaseAction.BIND, mac=KNOWN,
                                         address=NODE.address, node="node01",
                                         expires=NOW + 3600, state=LeaseState.BOUND)
    assert d.event is not None and d.event.kind == "dhcp.ack"


def test_request_selecting_wrong_address_is_naked() -> None:
    d = decide(request(MessageType.REQUEST, o54=SERVER.packed, o50=ip("10.0.0.50")))
    assert mtype_of(d) is MessageType.NAK
    assert d.reply is not None and d.reply.yiaddr == IPv4Address(0)
    assert d.lease_change is None
    assert d.destination is not None and d.destination.broadcast
    assert d.event is not None and d.event.kind == "dhcp.nak"


def test_nak_through_relay_sets_broadcast_bit() -> None:
    d = decide(request(MessageType.REQUEST, giaddr="10.0.0.254", o54=SERVER.packed,
                       o50=ip("10.0.0.50")))
    assert d.reply is not None and d.reply.broadcast
    assert d.destination is not None and d.destination.port == 67


def test_request_for_another_server_is_ignored() -> None:
    d = decide(request(MessageType.REQUEST, o54=ip("10.0.0.9"), o50=NODE.address.packed))
    assert d.reply is None


def test_init_reboot() -> None:
    ok = decide(request(MessageType.REQUEST, o50=NODE.address.packed))
    assert mtype_of(ok) is MessageType.ACK
    bad = decide(request(MessageType.REQUEST, o50=ip("10.0.0.77")))
    assert mtype_of(bad) is MessageType.NAK


def test_renewing_unicasts_to_ciaddr() -> None:
    d = decide(request(MessageType.REQUEST, ciaddr=str(NODE.address)))
    assert mtype_of(d) is MessageType.ACK
    assert d.reply is not None and d.reply.ciaddr == NODE.address
    assert d.destination is not None and not d.destination.broadcast
    assert (d.destination.address, d.destination.port) == (NODE.address, 68)
    assert d.lease_change is not None and d.lease_change.expires == NOW + 3600


def test_rebinding_with_wrong_address_is_naked() -> None:
    d = decide(request(MessageType.REQUEST, ciaddr="10.0.0.88"))
    assert mtype_of(d) is MessageType.NAK


def test_inform_gets_configuration_without_address() -> None:
    d = decide(request(MessageType.INFORM, ciaddr=str(NODE.address)))
    assert mtype_of(d) is MessageType.ACK
    assert d.reply is not None and d.reply.yiaddr == IPv4Address(0)
    assert OptionCode.LEASE_TIME not in d.reply.options
    assert OptionCode.ROUTER in d.reply.options
    assert d.lease_change is None
    assert d.destination is not None and d.destination.address == NODE.address


HELD = IPv4Address("10.0.0.101")
OPTION82 = b"\x01\x04port"


def _pool_leases(relay_info: bytes | None = None) -> MemoryLeases:
    leases = MemoryLeases()
    leases.by_mac[STRANGER] = Lease(mac=STRANGER, address=HELD, node=None, expires=NOW + 10,
                                    state=LeaseState.BOUND, relay_info=relay_info)
    return leases


def test_decline_from_the_holder_marks_address_bad() -> None:
    d = respond(request(MessageType.DECLINE, STRANGER, o54=SERVER.packed, o50=HELD.packed),
                now=NOW, config=replace(CONFIG, pool=POOL), lookup=lookup,
                leases=_pool_leases(), frame_source=STRANGER)
    assert d.reply is None
    assert d.lease_change is not None and d.lease_change.action is LeaseAction.DECLINE
    assert d.lease_change.address == HELD and d.lease_change.expires > NOW


def test_relayed_decline_with_the_leases_option_82_is_accepted() -> None:
    d = respond(request(MessageType.DECLINE, STRANGER, giaddr="10.0.5.1", o50=HELD.packed,
                        o82=OPTION82),
                now=NOW, config=replace(CONFIG, pool=POOL), lookup=lookup,
                leases=_pool_leases(OPTION82), frame_source=None)
    assert d.lease_change is not None and d.lease_change.action is LeaseAction.DECLINE


@pytest.mark.parametrize(("mac", "address", "frame", "relay", "lease_82", "why"), [
    (STRANGER, HELD, None, None, None, "sent from unknown"),
    (STRANGER, HELD, KNOWN, None, None, "sent from 52:54:00:00:00:01"),  # forged chaddr
    (KNOWN, HELD, KNOWN, None, None, "not this client's lease"),  # another MAC, its own frame
    (STRANGER, IPv4Address("10.0.0.102"), STRANGER, None, None, "not this client's lease"),
    (KNOWN, NODE.address, KNOWN, None, None, "not a pool address"),
    (STRANGER, HELD, None, OPTION82, None, "relay agent info differs"),
    (STRANGER, HELD, None, b"\x01\x04evil", OPTION82, "relay agent info differs"),
    (STRANGER, HELD, None, b"", OPTION82, "relay agent info differs"),
])
def test_decline_refused(mac: MacAddress, address: IPv4Address, frame: MacAddress | None,
                         relay: bytes | None, lease_82: bytes | None, why: str) -> None:
    options = {"o50": address.packed}
    if relay:
        options["o82"] = relay
    packet = request(MessageType.DECLINE, mac, giaddr="10.0.5.1" if relay is not None
                     else "0.0.0.0", **options)
    d = respond(packet, now=NOW, config=replace(CONFIG, pool=POOL), lookup=lookup,
                leases=_pool_leases(lease_82), frame_source=frame,
                is_reserved=lambda a: a == NODE.address)
    assert d.lease_change is None and d.reply is None
    assert why in d.reason


def test_relayed_ack_remembers_option_82() -> None:
    config = replace(CONFIG, pool=POOL)
    leases = _pool_leases()
    d = decide(request(MessageType.REQUEST, STRANGER, giaddr="10.0.0.254", o54=SERVER.packed,
                       o50=HELD.packed, o82=OPTION82), config=config, leases=leases)
    assert mtype_of(d) is MessageType.ACK
    assert d.lease_change is not None and d.lease_change.relay_info == OPTION82


def test_release_frees_the_lease() -> None:
    leases = MemoryLeases()
    leases.by_mac[KNOWN] = Lease(mac=KNOWN, address=NODE.address, node="node01",
                                 expires=NOW + 10, state=LeaseState.BOUND)
    d = decide(request(MessageType.RELEASE, ciaddr=str(NODE.address), o54=SERVER.packed),
               leases=leases)
    assert d.reply is None
    assert d.lease_change is not None and d.lease_change.action is LeaseAction.RELEASE
    other = decide(request(MessageType.RELEASE, ciaddr="10.0.0.5"), leases=leases)
    assert other.lease_change is None


def test_server_messages_and_replies_are_ignored() -> None:
    assert decide(request(MessageType.OFFER)).reply is None
    reply = replace(request(MessageType.DISCOVER), op=BootOp.REPLY)
    assert decide(reply).reply is None
    bootp = DhcpPacket(op=BootOp.REQUEST, xid=1, chaddr=KNOWN.packed)
    assert decide(bootp).reply is None


# --- unknown MACs ---

def test_unknown_without_discovery_gets_nothing() -> None:
    for mtype in MessageType:
        assert decide(request(mtype, STRANGER, o54=SERVER.packed,
                              o50=ip("10.0.0.100"))).reply is None


def test_unknown_pxe_client_is_recorded_even_without_discovery() -> None:
    d = decide(request(MessageType.DISCOVER, STRANGER, o60=b"PXEClient:Arch:00007",
                       o93=b"\x00\x07"))
    assert d.reply is None
    assert d.unknown_client is not None and d.unknown_client.arch == 7


def test_unknown_with_discovery_full_dora_from_pool() -> None:
    config = replace(CONFIG, pool=POOL)
    leases = MemoryLeases()
    offer = decide(request(MessageType.DISCOVER, STRANGER), config=config, leases=leases)
    assert offer.reply is not None and mtype_of(offer) is MessageType.OFFER
    address = offer.reply.yiaddr
    assert POOL[0] <= address <= POOL[1]
    assert OptionCode.HOSTNAME not in offer.reply.options
    assert OptionCode.BOOTFILE_NAME not in offer.reply.options
    assert offer.unknown_client is not None and offer.unknown_client.mac == STRANGER
    assert offer.lease_change is not None and offer.lease_change.state is LeaseState.OFFERED
    leases.apply(offer.lease_change)
    ack = decide(request(MessageType.REQUEST, STRANGER, o54=SERVER.packed, o50=address.packed),
                 config=config, leases=leases)
    assert mtype_of(ack) is MessageType.ACK
    assert ack.lease_change is not None and ack.lease_change.state is LeaseState.BOUND
    assert ack.lease_change.node is None
    leases.apply(ack.lease_change)
    # a second unknown client never gets the first one's address
    second = MacAddress.parse("52:54:00:00:00:98")
    offer2 = decide(request(MessageType.DISCOVER, second, o50=address.packed), config=config,
                    leases=leases)
    assert offer2.reply is not None and offer2.reply.yiaddr != address
    # nor can it take it by asking
    nak = decide(request(MessageType.REQUEST, second, o54=SERVER.packed, o50=address.packed),
                 config=config, leases=leases)
    assert mtype_of(nak) is MessageType.NAK


def test_pool_skips_declined_and_node_addresses_and_runs_out() -> None:
    config = replace(CONFIG, pool=(IPv4Address("10.0.0.10"), IPv4Address("10.0.0.12")))
    leases = MemoryLeases()
    leases.declined[IPv4Address("10.0.0.10")] = NOW + 5
    given = set()
    for n in range(3):
        mac = MacAddress(bytes((2, 0, 0, 0, 0, n)))
        d = decide(request(MessageType.DISCOVER, mac), config=config, leases=leases)
        if d.reply is None:
            assert d.reason == "discovery pool exhausted"
            continue
        given.add(d.reply.yiaddr)
        leases.apply(d.lease_change)
    assert given == {IPv4Address("10.0.0.12")}  # .10 declined, .11 is node01's


def test_expired_lease_of_another_client_can_be_reused() -> None:
    config = replace(CONFIG, pool=(IPv4Address("10.0.0.100"), IPv4Address("10.0.0.100")))
    leases = MemoryLeases()
    leases.by_mac[KNOWN] = Lease(mac=KNOWN, address=IPv4Address("10.0.0.100"), node=None,
                                 expires=NOW - 1, state=LeaseState.BOUND)
    d = decide(request(MessageType.DISCOVER, STRANGER), config=config, leases=leases)
    assert d.reply is not None and d.reply.yiaddr == IPv4Address("10.0.0.100")


def test_unknown_init_reboot_without_record_is_silent() -> None:
    config = replace(CONFIG, pool=POOL)
    d = decide(request(MessageType.REQUEST, STRANGER, o50=POOL[0].packed), config=config)
    assert d.reply is None


def test_selecting_another_server_releases_our_offer() -> None:
    config = replace(CONFIG, pool=POOL)
    leases = MemoryLeases()
    offer = decide(request(MessageType.DISCOVER, STRANGER), config=config, leases=leases)
    leases.apply(offer.lease_change)
    d = decide(request(MessageType.REQUEST, STRANGER, o54=ip("10.0.0.9"), o50=POOL[0].packed),
               config=config, leases=leases)
    assert d.reply is None
    assert d.lease_change is not None and d.lease_change.action is LeaseAction.RELEASE


# --- proxy mode ---

PROXY = replace(CONFIG, mode=DhcpMode.PROXY)


def test_proxy_offer_has_boot_info_only() -> None:
    d = decide(request(MessageType.DISCOVER, o60=b"PXEClient:Arch:00000", o93=b"\x00\x00"),
               config=PROXY)
    assert d.reply is not None and mtype_of(d) is MessageType.OFFER
    reply = d.reply
    assert reply.yiaddr == IPv4Address(0)
    assert reply.siaddr == SERVER and reply.file == b"undionly.kpxe"
    o = reply.options
    assert o[OptionCode.VENDOR_CLASS] == b"PXEClient"
    for code in (OptionCode.SUBNET_MASK, OptionCode.ROUTER, OptionCode.LEASE_TIME,
                 OptionCode.DNS_SERVERS, OptionCode.IPXE_ENCAP):
        assert code not in o
    assert d.lease_change is None
    assert d.destination is not None and d.destination.broadcast


def test_proxy_ignores_non_pxe_and_unknown_and_requests_on_67() -> None:
    assert decide(request(MessageType.DISCOVER), config=PROXY).reply is None
    assert decide(request(MessageType.DISCOVER, STRANGER, o60=b"PXEClient"),
                  config=PROXY).reply is None
    assert decide(request(MessageType.REQUEST, o60=b"PXEClient", o50=NODE.address.packed),
                  config=PROXY).reply is None


def test_proxy_request_on_4011_gets_ack_back_to_sender() -> None:
    source = (IPv4Address("192.168.1.50"), 68)
    d = decide(request(MessageType.REQUEST, ciaddr="192.168.1.50", o60=b"PXEClient",
                       o93=b"\x00\x07"), config=PROXY, port=PXE_PORT, source=source)
    assert mtype_of(d) is MessageType.ACK
    assert d.reply is not None and d.reply.file == b"ipxe.efi"
    assert d.reply.yiaddr == IPv4Address(0)
    assert d.destination is not None
    assert (d.destination.address, d.destination.port) == source


def test_port_4011_ignored_in_full_mode() -> None:
    assert decide(request(MessageType.REQUEST, o60=b"PXEClient"), port=PXE_PORT).reply is None


def test_long_ipxe_url_goes_in_option_67_only() -> None:
    long_node = replace(NODE, ipxe_url="http://10.0.0.1/" + "x" * 200)
    d = respond(request(MessageType.DISCOVER, o77=b"iPXE"), now=NOW, config=CONFIG,
                lookup=lambda mac: long_node, leases=MemoryLeases())
    assert d.reply is not None and d.reply.file == b""
    assert d.reply.options[OptionCode.BOOTFILE_NAME] == long_node.ipxe_url.encode()


def test_cached_reply_options_are_those_of_each_request() -> None:
    """Replies reuse the option set of an earlier request with the same shape: a sequence of
    requests that differ in one thing each gets, through one config, the bytes a fresh
    config (an empty cache) gives it."""
    arch_uefi = (7).to_bytes(2, "big")
    variants: list[dict[str, bytes]] = [
        {}, {"o55": bytes((1, 3, 6))}, {"o55": bytes((6, 3, 1))}, {"o60": b"PXEClient:Arch"},
        {"o60": b"PXEClient:Arch", "o97": b"\0" + bytes(16)},
        {"o60": b"PXEClient:Arch", "o97": b"\0" + bytes(range(16))},
        {"o77": b"iPXE"}, {"o93": arch_uefi}, {"o82": b"\x01\x02ab"}, {"o82": b"\x01\x02cd"},
        {"o12": b"a-hostname"},
    ]
    pool_config = replace(CONFIG, pool=POOL)
    for config in (pool_config, replace(CONFIG, mode=DhcpMode.PROXY)):
        for mac in (KNOWN, STRANGER):
            for mtype in (MessageType.DISCOVER, MessageType.INFORM):
                for options in variants:
                    req = request(mtype, mac, **options)
                    cached = respond(req, now=NOW, config=config, lookup=lookup,
                                     leases=MemoryLeases())
                    fresh = respond(req, now=NOW, config=replace(config), lookup=lookup,
                                    leases=MemoryLeases())
                    if fresh.reply is None:
                        assert cached.reply is None
                        continue
                    assert cached.reply is not None
                    assert cached.reply.to_bytes() == fresh.reply.to_bytes(), (mac, options)


# --- a pool client's renewal on a view that may miss other servers' leases ---

PARTIAL = replace(CONFIG, pool=POOL)


def renewal(mac: MacAddress, address: IPv4Address, how: str) -> DhcpPacket:
    if how == "init-reboot":
        return request(MessageType.REQUEST, mac, o50=address.packed)
    return request(MessageType.REQUEST, mac, ciaddr=str(address))  # renewing, rebinding


def bound(mac: MacAddress, address: IPv4Address, expires: float = NOW + 60) -> MemoryLeases:
    leases = MemoryLeases()
    leases.by_mac[mac] = Lease(mac=mac, address=address, node=None, expires=expires,
                               state=LeaseState.BOUND)
    return leases


@pytest.mark.parametrize("how", ["init-reboot", "renewing"])
def test_a_renewal_the_partial_view_cannot_answer_asks_for_a_reread(how: str) -> None:
    leases = bound(KNOWN, POOL[1])  # another client's row the view holds
    for held in (MemoryLeases(), leases):  # no record; the address another client's
        d = respond(renewal(STRANGER, POOL[1], how), now=NOW, config=PARTIAL, lookup=lookup,
                    leases=held, view_complete=False)
        assert (d.reply, d.reread, d.lease_change) == (None, POOL[1], None), d.reason
    # The view knows it: ACKed at once, no read (the hot path of known leases).
    own = respond(renewal(STRANGER, POOL[0], how), now=NOW, config=PARTIAL, lookup=lookup,
                  leases=bound(STRANGER, POOL[0]), view_complete=False)
    assert mtype_of(own) is MessageType.ACK and own.reread is None
    # SELECTING (the client chose this server's offer): no read, the claim decides.
    chosen = respond(request(MessageType.REQUEST, STRANGER, o54=SERVER.packed,
                             o50=POOL[0].packed), now=NOW, config=PARTIAL, lookup=lookup,
                     leases=MemoryLeases(), view_complete=False)
    assert mtype_of(chosen) is MessageType.ACK and chosen.reread is None
    # Wrong network: NAKed without a read, whatever the view.
    off = respond(renewal(STRANGER, IPv4Address("10.1.0.5"), how), now=NOW, config=PARTIAL,
                  lookup=lookup, leases=MemoryLeases(), view_complete=False)
    assert mtype_of(off) is MessageType.NAK and off.reread is None


@pytest.mark.parametrize("how", ["init-reboot", "renewing"])
def test_a_renewal_for_another_clients_address_is_naked_a_free_one_unanswered(how: str
                                                                               ) -> None:
    taken = decide(renewal(STRANGER, POOL[1], how), config=PARTIAL, leases=bound(KNOWN, POOL[1]))
    assert mtype_of(taken) is MessageType.NAK and taken.reread is None
    expired = decide(renewal(STRANGER, POOL[1], how), config=PARTIAL,
                     leases=bound(KNOWN, POOL[1], expires=NOW - 1))
    assert expired.reply is None and expired.reason == "no record of this client"
    free = decide(renewal(STRANGER, POOL[1], how), config=PARTIAL)
    assert free.reply is None and free.reason == "no record of this client"


def test_a_renewal_off_the_subnet_is_naked_unless_relayed_from_elsewhere() -> None:
    outside = IPv4Address("192.168.7.9")
    direct = decide(request(MessageType.REQUEST, STRANGER, o50=outside.packed), config=PARTIAL)
    assert mtype_of(direct) is MessageType.NAK
    ours = decide(request(MessageType.REQUEST, STRANGER, giaddr="10.0.0.250",
                          o50=outside.packed), config=PARTIAL)
    assert mtype_of(ours) is MessageType.NAK
    # A relay on another network: its clients' network is not one this server knows.
    foreign = decide(request(MessageType.REQUEST, STRANGER, giaddr="192.168.7.1",
                             o50=outside.packed), config=PARTIAL)
    assert foreign.reply is None


def test_the_server_id_may_be_a_service_address_and_both_name_us() -> None:
    service = IPv4Address("10.0.0.201")
    config = replace(PARTIAL, server_id=service)
    offer = decide(request(MessageType.DISCOVER, STRANGER), config=config)
    assert offer.reply is not None
    assert offer.reply.options.get(OptionCode.SERVER_ID) == service.packed
    assert offer.reply.siaddr == IPv4Address(0)  # next-server: the host address (nodes only)
    for named in (service, SERVER):  # SELECTING: our identifier, or our own address
        leases = MemoryLeases()
        leases.apply(offer.lease_change)
        assert offer.reply is not None
        ack = decide(request(MessageType.REQUEST, STRANGER, o54=named.packed,
                             o50=offer.reply.yiaddr.packed), config=config, leases=leases)
        assert mtype_of(ack) is MessageType.ACK
    nak = decide(request(MessageType.REQUEST, STRANGER, o50=ip("192.168.7.9")), config=config)
    assert nak.reply is not None and nak.reply.options.get(OptionCode.SERVER_ID) == service.packed
    elsewhere = decide(request(MessageType.REQUEST, STRANGER, o54=ip("10.0.0.202"),
                               o50=POOL[0].packed), config=config)
    assert elsewhere.reply is None and elsewhere.reason == "client chose another server"
