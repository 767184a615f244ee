"""The router advertisement the lab sends: the fields iPXE and Linux hosts act on."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

import pytest

from oneroot.errors import LabError, MalformedPacket
from oneroot.lab.ra import (
    ICMPV6_ROUTER_ADVERTISEMENT,
    ICMPV6_ROUTER_SOLICITATION,
    icmpv6_type,
    interface_mac,
    router_advertisement,
)
from oneroot.net import MacAddress

MAC = MacAddress.parse("52:54:00:aa:bb:cc")
PREFIX = ipaddress.IPv6Network("fd00:1ab::/64")


def options(packet: bytes) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    pos = 16
    while pos < len(packet):
        kind, blocks = packet[pos], packet[pos + 1]
        assert blocks > 0
        found[kind] = packet[pos:pos + 8 * blocks]
        pos += 8 * blocks
    assert pos == len(packet)
    return found


def test_header_says_slaac_only_and_not_a_default_router() -> None:
    packet = router_advertisement(source_mac=MAC, prefix=PREFIX)
    kind, code, checksum, hop_limit, flags, lifetime, reachable, retrans = struct.unpack(
        "!BBHBBHII", packet[:16])
    assert (kind, code, checksum) == (ICMPV6_ROUTER_ADVERTISEMENT, 0, 0)  # kernel fills sum
    assert hop_limit == 64
    assert flags == 0  # neither Managed nor Other: iPXE does not wait for DHCPv6
    assert lifetime == 0
    assert (reachable, retrans) == (0, 0)


def test_options_carry_the_mac_and_an_autonomous_prefix() -> None:
    opts = options(router_advertisement(source_mac=MAC, prefix=PREFIX, mtu=1500))
    assert opts[1] == b"\x01\x01" + MAC.packed
    prefix_len, flags, valid, preferred = struct.unpack("!BBII", opts[3][2:12])
    assert prefix_len == 64
    assert flags == 0xC0  # on-link, autonomous
    assert valid >= preferred > 0
    assert ipaddress.IPv6Address(opts[3][16:32]) == PREFIX.network_address
    assert struct.unpack("!I", opts[5][4:8]) == (1500,)


def test_slaac_needs_a_64() -> None:
    with pytest.raises(LabError, match="/64"):
        router_advertisement(source_mac=MAC, prefix=ipaddress.IPv6Network("fd00::/48"))


def test_icmpv6_type() -> None:
    assert icmpv6_type(bytes([ICMPV6_ROUTER_SOLICITATION, 0, 0, 0, 0, 0, 0, 0])) == 133
    with pytest.raises(MalformedPacket):
        icmpv6_type(b"\x85")


def test_interface_mac_reads_sysfs(tmp_path: Path) -> None:
    (tmp_path / "br0").mkdir()
    (tmp_path / "br0" / "address").write_text("52:54:00:aa:bb:cc\n")
    assert interface_mac("br0", sys_class_net=tmp_path) == MAC
    with pytest.raises(LabError):
        interface_mac("nope", sys_class_net=tmp_path)
