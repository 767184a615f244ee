"""The lab's management network (issue 13): the BMCs' addresses on a bridge of their own are
reached from the server, never from a node on the nodes' bridge, even one that routes to them
through the server (Linux would otherwise take a packet for any local address on any
interface). Real namespaces, bridges and nftables; needs root."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from oneroot.errors import LabError
from oneroot.lab import Lab

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, nftables)"),
]

BMC = ipaddress.IPv4Address("10.94.1.11")
CONNECT = ("import socket, sys\n"
           "try:\n"
           "    socket.create_connection((sys.argv[1], 623), timeout=2).close()\n"
           "except OSError as e:\n"
           "    sys.exit(f'{type(e).__name__}: {e}')\n")


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab.create(subnet="10.94.0.0/24", router_advertisements=False) as lab:
        lab.add_management_network(ipaddress.IPv4Interface("10.94.1.1/24"))
        lab.add_management_address(BMC)
        listener = lab.popen_in_ns(
            [sys.executable, "-c", "import socket, time\n"
             f"s = socket.create_server(('{BMC}', 623)); print('ready', flush=True)\n"
             "while True: s.accept()[0].close()\n"], what="bmc", stdout=subprocess.PIPE)
        assert listener.stdout is not None and listener.stdout.readline() == b"ready\n"
        yield lab


def connect(lab: Lab, netns: str | None) -> subprocess.CompletedProcess[str]:
    return lab.run_in_ns([sys.executable, "-c", CONNECT, str(BMC)], netns=netns, check=False)


def test_the_server_reaches_a_bmc_and_a_node_does_not(lab: Lab) -> None:
    assert connect(lab, None).returncode == 0  # the server: the BMC answers
    node = lab.add_client("10.94.0.11/24")
    lab.run_in_ns(["ip", "route", "add", "10.94.1.0/24", "via", "10.94.0.1"], netns=node.netns)
    refused = connect(lab, node.netns)
    assert refused.returncode != 0 and "timed out" in refused.stderr, refused.stderr
    counters = lab.run_in_ns(["nft", "list", "table", "inet", "oneroot_mgmt"]).stdout
    assert "packets 0 " not in counters.split("input", 1)[1].split("}", 1)[0]


def test_an_address_off_the_management_network_is_refused(lab: Lab) -> None:
    with pytest.raises(LabError):
        lab.add_management_address(ipaddress.IPv4Address("10.94.0.50"))
