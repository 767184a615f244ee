"""The one client-message builder the tests and benches share (`oneroot.testing.dhcpmsg`):
what it sends parses back to the fields it was given, options in the documented order."""

from __future__ import annotations

from ipaddress import IPv4Address

from oneroot.proto.dhcp import BROADCAST_FLAG, MessageType, parse_packet
from oneroot.testing.dhcpmsg import client_message, numbered_mac


def test_numbered_macs() -> None:
    assert numbered_mac(0x010203) == bytes.fromhex("020000010203")
    assert numbered_mac(5, prefix=0x50) == bytes.fromhex("025000000005")


def test_a_request_selecting_an_offer_parses_back() -> None:
    sent = client_message(MessageType.REQUEST, mac=numbered_mac(9), xid=42, broadcast=True,
                          requested=IPv4Address("10.1.1.9"), server_id=IPv4Address("10.1.0.1"),
                          giaddr=IPv4Address("10.9.0.1"), prl=bytes((1, 3)), extra={60: b"PXE"})
    got = parse_packet(sent.to_bytes())
    assert (got.xid, got.chaddr[:6], got.flags) == (42, numbered_mac(9), BROADCAST_FLAG)
    assert got.giaddr == IPv4Address("10.9.0.1") and got.message_type is MessageType.REQUEST
    assert list(got.options.items()) == [(53, bytes((MessageType.REQUEST,))),
                                         (50, bytes((10, 1, 1, 9))), (54, bytes((10, 1, 0, 1))),
                                         (55, bytes((1, 3))), (60, b"PXE")]


def test_a_plain_discover_has_only_its_type() -> None:
    got = parse_packet(client_message(MessageType.DISCOVER, mac=numbered_mac(1), xid=1)
                       .to_bytes())
    assert got.flags == 0 and list(got.options) == [53]
