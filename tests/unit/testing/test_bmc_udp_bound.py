"""`testing.bmc.udp_bound`: a UDP port is seen bound (on 127.0.0.1 or every address) by reading
the kernel's table, without binding it; once closed, it is not."""

from __future__ import annotations

import socket

import pytest

from oneroot.testing.bmc import udp_bound


@pytest.mark.parametrize("address", ["127.0.0.1", "0.0.0.0"])
def test_a_bound_port_is_seen_and_a_closed_one_is_not(address: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((address, 0))
        port = sock.getsockname()[1]
        assert udp_bound(port)
    assert not udp_bound(port)

