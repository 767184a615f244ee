"""The DHCP service's own decisions around the responder: the relays a server serves, and
no new pool lease while the lease database is failing (known nodes still answered); a relay
whose segment has no pool, and a known node relayed from off its segment, counted and logged
at most once a minute."""

from __future__ import annotations

import logging
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from oneroot.inventory.leases import LeaseStore
from oneroot.net import MacAddress
from oneroot.proto.dhcp import (
    MessageType,
    NetworkConfig,
    NodeBoot,
    parse_packet,
)
from oneroot.serve.dhcp import DhcpService
from oneroot.testing.dhcpmsg import client_message

SERVER = IPv4Address("10.0.0.1")
NODE_MAC = MacAddress.parse("02:00:00:00:00:01")
STRANGER = MacAddress.parse("02:00:00:00:00:99")
NODE = NodeBoot(name="n1", address=IPv4Address("10.0.0.10"), bios_file="undionly.kpxe",
                uefi_file="ipxe.efi", ipxe_url="http://10.0.0.1/boot/n1.ipxe")
NETWORK = NetworkConfig(server_address=SERVER, subnet=IPv4Network("10.0.0.0/16"),
                        pool=(IPv4Address("10.0.1.0"), IPv4Address("10.0.1.255")))


def service(tmp_path: Path, relays: frozenset[IPv4Address] | None = None) -> DhcpService:
    return DhcpService(interface="lo", server_address=SERVER, network=NETWORK,
                       lookup={NODE_MAC: NODE}.get, leases=LeaseStore(tmp_path / "l.db"),
                       on_event=lambda event: None, relays=relays)


def discover(mac: MacAddress, giaddr: str = "0.0.0.0") -> bytes:
    return client_message(MessageType.DISCOVER, mac=mac.packed, xid=7,
                          giaddr=IPv4Address(giaddr)).to_bytes()


def answered(dhcp: DhcpService, data: bytes, source: str = "10.9.0.1") -> bool:
    reply, _ = dhcp._decide(data, (source, 67), 67, 1000.0)
    return reply is not None and parse_packet(reply.data).message_type is MessageType.OFFER


def test_relayed_requests_only_from_the_servers_relays(tmp_path: Path) -> None:
    dhcp = service(tmp_path, relays=frozenset({IPv4Address("10.0.9.1")}))
    assert answered(dhcp, discover(NODE_MAC, giaddr="10.0.9.1"))
    assert not answered(dhcp, discover(NODE_MAC, giaddr="10.0.8.1"))  # another server's
    assert answered(dhcp, discover(NODE_MAC))  # its own interface's clients
    everyone = service(tmp_path / "x")
    assert answered(everyone, discover(NODE_MAC, giaddr="10.0.8.1"))
    # Another server's relay is its business: neither counted nor logged here.
    assert dhcp.unserved_nodes.count == dhcp.unserved_relays.count == 0


def test_a_known_node_relayed_from_off_its_segment_is_counted_and_logged_once_a_minute(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dhcp = service(tmp_path)
    moved = discover(NODE_MAC, giaddr="10.8.0.1")  # outside 10.0.0.0/16, where n1's address is
    with caplog.at_level(logging.WARNING, logger="oneroot.serve.dhcp"):
        for now in (1000.0, 1001.0, 1060.0):
            reply, _ = dhcp._decide(moved, ("10.8.0.1", 67), 67, now)
            assert reply is None
    assert (dhcp.unserved_nodes.count, dhcp.unserved_relays.count) == (3, 0)
    lines = [r.getMessage() for r in caplog.records if "dhcp.node_off_segment" in r.getMessage()]
    assert [line.split()[1:5] for line in lines] == [
        ["relay=10.8.0.1", f"mac={NODE_MAC}", "node=n1", "count=1"],
        ["relay=10.8.0.1", f"mac={NODE_MAC}", "node=n1", "count=3"]]
    assert "fixed address" in lines[0]
    assert answered(dhcp, discover(NODE_MAC, giaddr="10.0.9.1"))  # a relay on its subnet


def test_no_pool_offer_while_the_lease_database_fails(tmp_path: Path) -> None:
    dhcp = service(tmp_path)
    assert answered(dhcp, discover(STRANGER))
    dhcp.health.last_failure = 2.0  # the last write failed, none succeeded since
    dhcp.health.last_commit = 1.0
    assert not answered(dhcp, discover(STRANGER))
    assert dhcp.pool_refused == 1
    assert answered(dhcp, discover(NODE_MAC))  # known nodes: from the loaded inventory
    dhcp.health.last_commit = 3.0  # a write succeeded again
    assert answered(dhcp, discover(STRANGER))


def test_a_relay_with_no_pool_is_counted_and_logged_once_a_minute(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dhcp = service(tmp_path)
    stray = discover(STRANGER, giaddr="10.8.0.1")  # outside 10.0.0.0/16, no segment
    with caplog.at_level(logging.WARNING, logger="oneroot.serve.dhcp"):
        for now in (1000.0, 1001.0, 1059.0, 1060.0):
            reply, _ = dhcp._decide(stray, ("10.8.0.1", 67), 67, now)
            assert reply is None
    assert dhcp.unserved_relays.count == 4
    lines = [r.getMessage() for r in caplog.records if "dhcp.relay_unserved" in r.getMessage()]
    assert [line.split()[1:4] for line in lines] == [
        ["relay=10.8.0.1", f"mac={STRANGER}", "count=1"],
        ["relay=10.8.0.1", f"mac={STRANGER}", "count=4"]]
    assert answered(dhcp, discover(STRANGER, giaddr="10.0.9.1"))  # inside the subnet
    assert dhcp.unserved_relays.count == 4

