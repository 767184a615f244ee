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
