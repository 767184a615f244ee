"""NodePinner's bookkeeping without IO: a DHCP ACK on the MAC a node's neighbour entry already
names is recorded in place (serve then needs no worker thread for it); any other MAC is left
to `bind`, which runs `ip neigh`."""

from __future__ import annotations

import ipaddress

from oneroot.net import MacAddress
from oneroot.netpin import NodePinner

ADDRESS = ipaddress.IPv4Address("10.0.0.11")
FIRST, SECOND = MacAddress.parse("52:54:00:00:00:01"), MacAddress.parse("52:54:00:00:01:01")


def test_an_ack_on_the_pinned_mac_is_recorded_in_place() -> None:
    pinner = NodePinner(interface="br0", nft="/nonexistent/nft")  # any IO would fail
    pinner.neighbours[ADDRESS] = FIRST
    assert pinner.bind_in_place(ADDRESS, FIRST)
    assert pinner.bound == {ADDRESS: FIRST} and pinner.neighbours == {ADDRESS: FIRST}


def test_an_ack_on_another_mac_needs_bind() -> None:
    pinner = NodePinner(interface="br0", nft="/nonexistent/nft")
    pinner.neighbours[ADDRESS] = FIRST
    assert not pinner.bind_in_place(ADDRESS, SECOND)
    assert not pinner.bind_in_place(ipaddress.IPv4Address("10.0.0.12"), FIRST)  # not pinned
    assert pinner.bound == {} and pinner.neighbours == {ADDRESS: FIRST}
