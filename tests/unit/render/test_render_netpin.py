"""The node pins and the lab bridge guard as nftables text (goldens), and the neighbour
table's size."""

from __future__ import annotations

import ipaddress

import pytest

from oneroot.errors import ConfigError
from oneroot.net import MacAddress
from oneroot.render.netpin import (
    GuardedPort,
    NodePin,
    PinContext,
    neigh_thresholds,
    pinned_pairs,
    port_guard_table,
    render_bridge_guard,
    render_pins,
    render_unpin,
)
from oneroot.testing.render_example import EXAMPLE_NODES, GoldenCheck

SERVER = ipaddress.IPv4Address("10.0.0.1")


def pins(interface: str = "eth1") -> PinContext:
    return PinContext(interface=interface, server_address=SERVER, nodes=tuple(
        NodePin(name=n.name, address=n.address, macs=n.macs) for n in EXAMPLE_NODES.values()))


def test_pins_golden(golden: GoldenCheck) -> None:
    golden("pins.nft", render_pins(pins()))


def test_bridge_guard_golden(golden: GoldenCheck) -> None:
    ports = [GuardedPort(port=f"tap{i}", mac=n.macs[0], address=n.address)
             for i, n in enumerate(EXAMPLE_NODES.values())]
    golden("bridge-guard.nft", render_bridge_guard("br0", ports))


def test_every_mac_of_a_node_is_pinned_to_its_address() -> None:
    pairs = pinned_pairs(pins())
    node02 = EXAMPLE_NODES["node02"]
    assert [m for a, m in pairs if a == node02.address] == sorted(node02.macs)
    assert len(pairs) == sum(len(n.macs) for n in EXAMPLE_NODES.values())


def test_replacing_is_one_transaction_of_our_own_table() -> None:
    text = render_pins(pins())
    assert text.index("table netdev oneroot\n") < text.index("delete table netdev oneroot")
    assert "flush ruleset" not in text
    assert render_unpin() == "table netdev oneroot\ndelete table netdev oneroot\n"


def test_two_nodes_with_one_address_are_refused() -> None:
    twin = NodePin(name="twin", address=EXAMPLE_NODES["node01"].address,
                   macs=(MacAddress.parse("52:54:00:00:09:09"),))
    ctx = pins()
    with pytest.raises(ConfigError, match=r"share address 10\.0\.0\.11"):
        render_pins(PinContext(interface="eth1", server_address=SERVER,
                               nodes=(*ctx.nodes, twin)))


@pytest.mark.parametrize("name", ["", "eth0; flush ruleset", 'a"b', "x" * 16])
def test_an_interface_name_cannot_inject_rules(name: str) -> None:
    with pytest.raises(ConfigError, match="interface name"):
        render_pins(pins(name))


def test_a_port_guarded_on_its_own_has_a_table_of_its_own() -> None:
    port = GuardedPort(port="try2a-0.f", mac=MacAddress.parse("52:54:00:00:09:09"),
                       address=ipaddress.IPv4Address("10.0.0.254"))
    table = port_guard_table(port.port)
    assert table == "oneroot_lab_try2a_0_f"
    text = render_bridge_guard("br0", [port], table=table)
    assert f"table bridge {table}\ndelete table bridge {table}\n" in text
    assert "oneroot_lab " not in text and "oneroot_lab\n" not in text
    for bad in ("x; flush ruleset", "1abc", ""):
        with pytest.raises(ConfigError, match="table name"):
            render_bridge_guard("br0", [port], table=bad)
    with pytest.raises(ConfigError, match="interface name"):
        port_guard_table("tap0; flush")


def test_neighbour_table_fits_a_thousand_nodes_and_never_shrinks() -> None:
    t1, t2, t3 = neigh_thresholds(1000)
    assert (t1, t2, t3) == (1000, 1512, 3024)
    assert t3 > 1024  # the kernel's default overflows at 1,000 nodes plus anything else
    assert neigh_thresholds(10) == (128, 522, 1044)
    assert neigh_thresholds(10, (4096, 8192, 16384)) == (4096, 8192, 16384)
    assert neigh_thresholds(5000, (6000, 100, 100)) == (6000, 6000, 11024)
