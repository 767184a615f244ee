"""The lab bridge's source guard (issue 12): a node's port passes only its own MAC and
address, with the real kernel's bridge and nftables. Server and other unguarded ports are
not filtered. Needs root."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterator

import pytest

from oneroot.initramfs.busybox import fetch_busybox
from oneroot.lab import Lab
from oneroot.lab.netns import Client, Tap
from oneroot.net import MacAddress
from oneroot.testing.cache import suite_cache_dir

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, nftables)"),
]

SERVER = "10.93.0.1"
NODE01, NODE02 = "10.93.0.11", "10.93.0.12"
MAC01, MAC02 = "52:54:00:93:00:01", "52:54:00:93:00:02"


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab.create(subnet="10.93.0.0/24", router_advertisements=False) as lab:
        yield lab


def _ip(lab: Lab, client: Client, *args: str) -> None:
    lab.run_in_ns(["ip", *args], netns=client.netns)


def _ping(lab: Lab, client: Client, source: str) -> bool:
    busybox = str(fetch_busybox(cache_dir=suite_cache_dir()).path)
    done = lab.run_in_ns([busybox, "ping", "-c", "1", "-W", "2", "-I", source, SERVER],
                         netns=client.netns, check=False)
    return done.returncode == 0


def _node02(lab: Lab) -> Client:
    """A client on port vc0 standing for node02: its MAC and address, its port guarded."""
    client = lab.add_client(f"{NODE02}/24")
    for args in (["link", "set", "eth0", "down"], ["link", "set", "eth0", "address", MAC02],
                 ["link", "set", "eth0", "up"]):
        _ip(lab, client, *args)
    lab.guard_port(Tap(name="vc0"), mac=MacAddress.parse(MAC02),
                   address=ipaddress.IPv4Address(NODE02))
    return client


def test_a_node_port_passes_its_own_mac_and_address(lab: Lab) -> None:
    node02 = _node02(lab)
    assert _ping(lab, node02, NODE02)


def test_a_node_port_drops_another_nodes_address(lab: Lab) -> None:
    node02 = _node02(lab)
    _ip(lab, node02, "addr", "add", f"{NODE01}/24", "dev", "eth0")
    assert not _ping(lab, node02, NODE01)
    # ... and another node's MAC with it
    for args in (["link", "set", "eth0", "down"], ["link", "set", "eth0", "address", MAC01],
                 ["link", "set", "eth0", "up"]):
        _ip(lab, node02, *args)
    assert not _ping(lab, node02, NODE01)
    assert not _ping(lab, node02, NODE02)
    rules = lab.run_in_ns(["nft", "list", "table", "bridge", "oneroot_lab"]).stdout
    assert sum(int(n) for n in re.findall(r"packets (\d+)", rules)) > 0, rules


def test_unguarded_ports_are_not_filtered(lab: Lab) -> None:
    _node02(lab)
    other = lab.add_client(f"{NODE01}/24")  # vc1: a server or BMC port, never guarded
    _ip(lab, other, "addr", "add", "10.93.0.99/24", "dev", "eth0")
    assert _ping(lab, other, NODE01)
    assert _ping(lab, other, "10.93.0.99")


def test_a_canary_port_is_guarded_in_its_own_table_and_the_labs_stays(lab: Lab) -> None:
    """`lab try`'s canary: another process than the lab's supervisor guards its port. Its
    rules go in a table of their own, so the lab's table (node02's guard) is left whole."""
    _node02(lab)
    canary = lab.add_client("10.93.0.254/24")  # vc1
    own = lab.guard_own_port(Tap(name="vc1"), mac=MacAddress.parse(_mac_of(lab, canary)),
                             address=ipaddress.IPv4Address("10.93.0.254"))
    assert _ping(lab, canary, "10.93.0.254")
    _ip(lab, canary, "addr", "add", f"{NODE02}/24", "dev", "eth0")
    assert not _ping(lab, canary, NODE02)  # the canary cannot speak as node02
    labs = lab.run_in_ns(["nft", "list", "table", "bridge", "oneroot_lab"]).stdout
    assert 'iifname "vc0"' in labs and "vc1" not in labs, labs  # the lab's guard is whole
    lab.unguard_own(own)
    tables = lab.run_in_ns(["nft", "list", "tables"]).stdout
    assert own not in tables and "oneroot_lab" in tables, tables


def _mac_of(lab: Lab, client: Client) -> str:
    shown = lab.run_in_ns(["ip", "-o", "link", "show", "eth0"], netns=client.netns).stdout
    found = re.search(r"link/ether ([0-9a-f:]{17})", shown)
    assert found is not None, shown
    return found.group(1)
