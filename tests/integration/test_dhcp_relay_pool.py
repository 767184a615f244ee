"""A pool per relayed segment (setting `relay_pools`), with a real relay (dnsmasq's
`--dhcp-relay`, in a router namespace between two networks) and a real client (busybox udhcpc
on the relayed segment): the client binds an address of its segment's pool with its segment's
mask and the relay as router, then renews it straight to the server (unicast through the
router, not relayed) and keeps it. A client on a second relayed segment, which has no pool
(no `relay_pools` entry, outside `subnet`), is offered nothing (an address of the servers' own
pool is unusable there), and the server says why once, not once per DISCOVER. A known node
(fixed address in `subnet`) behind either relay is offered nothing either: a reservation
holds on its own segment only (Kea, ISC dhcpd), and the server says why once.
`network_config` builds the segment from the settings as serve does. Needs root."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from oneroot.lab import Lab
from oneroot.testing.dhcpclient import Udhcpc, UdhcpcEvents
from oneroot.testing.netns import STATE_DIR, available
from oneroot.testing.wait import until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not available(), reason="needs root and iproute2"),
    pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="needs dnsmasq (the relay)"),
]

SUBNET = IPv4Network("10.97.0.0/24")
SERVER = IPv4Address("10.97.0.2")
ROUTER_UP = IPv4Address("10.97.0.254")  # the router's address on the servers' network
RELAY = IPv4Address("10.97.5.1")  # and on the relayed segment: the giaddr
RELAY_POOLS = "10.97.5.1/24=10.97.5.100-10.97.5.149"
UNSERVED = IPv4Address("10.97.6.1")  # the router on a segment with no pool
NODE_MAC, NODE_ADDRESS = "02:97:00:00:00:11", "10.97.0.11"  # a known node, fixed in SUBNET

SERVER_MAIN = textwrap.dedent("""
    import asyncio, ipaddress, logging, sys
    from oneroot.inventory.leases import LeaseStore
    from oneroot.model.inventory import Inventory, settings_from_dict
    from oneroot.net import MacAddress
    from oneroot.ops.catalog import network_config
    from oneroot.proto.dhcp import NodeBoot
    from oneroot.serve.dhcp import DhcpService

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    settings = settings_from_dict({
        "server_address": sys.argv[1], "subnet": sys.argv[2], "discovery": "true",
        "pool_start": "10.97.0.100", "pool_end": "10.97.0.149", "relay_pools": sys.argv[3],
        "lease_time": 600})
    network = network_config(Inventory(settings=settings))
    node = NodeBoot(name="node01", address=ipaddress.IPv4Address(sys.argv[6]),
                    bios_file="undionly.kpxe", uefi_file="ipxe.efi",
                    ipxe_url="http://10.97.0.2/boot/node01.ipxe")
    known = {MacAddress.parse(sys.argv[5]): node}
    service = DhcpService(interface="eth0", server_address=network.server_address,
                          network=network, lookup=known.get,
                          leases=LeaseStore(sys.argv[4]), on_event=lambda e: None)
    asyncio.run(service.run())
""")

# The client's script: configures its address and default route as a real client does (its
# RENEW goes to the server through the router), and logs each event.
HOOK = """#!/bin/sh
case "$1" in
bound|renew) ip addr replace "$ip/$mask" dev "$interface"
  [ -n "$router" ] && ip route replace default via "${router%% *}" ;;
deconfig) ip addr flush dev "$interface" ;;
esac
echo "$1 ip=$ip mask=$mask router=$router serverid=$serverid" >> "$(dirname "$0")/events"
"""


def _segment(router: str, interface: str, relay: IPv4Address, client: str, server: str
             ) -> None:
    """A relayed segment: namespace `client` behind the router's `interface` (`relay`/24),
    and the server's route to it."""
    subprocess.run(["ip", "netns", "add", client], check=True)
    for argv in (["ip", "-n", router, "link", "add", interface, "type", "veth", "peer", "name",
                  "eth0", "netns", client],
                 ["ip", "-n", router, "addr", "add", f"{relay}/24", "dev", interface],
                 ["ip", "-n", router, "link", "set", interface, "up"],
                 ["ip", "-n", client, "link", "set", "lo", "up"],
                 ["ip", "-n", client, "link", "set", "eth0", "up"],
                 ["ip", "-n", server, "route", "add", str(IPv4Interface(f"{relay}/24").network),
                  "via", str(ROUTER_UP)]):
        subprocess.run(argv, check=True)


def test_a_relayed_client_binds_and_renews_on_its_segments_pool(tmp_path: Path) -> None:
    udhcpc = Udhcpc.install(tmp_path)
    log = tmp_path / "dhcp.log"
    with Lab.create(subnet=SUBNET, state_dir=STATE_DIR, router_advertisements=False) as lab:
        server = lab.add_client(f"{SERVER}/24")
        router = lab.add_client(f"{ROUTER_UP}/24")
        client = f"{router.netns}-seg"  # the relayed segments: namespaces behind the router
        stray = f"{router.netns}-nopool"
        try:
            _segment(router.netns, "eth1", RELAY, client, server.netns)
            _segment(router.netns, "eth2", UNSERVED, stray, server.netns)
            lab.run_in_ns(["sysctl", "-qw", "net.ipv4.ip_forward=1"], netns=router.netns)
            with log.open("ab") as out:
                dhcp = lab.popen_in_ns([sys.executable, "-c", SERVER_MAIN, str(SERVER),
                                        str(SUBNET), RELAY_POOLS, str(tmp_path / "l.db"),
                                        NODE_MAC, NODE_ADDRESS],
                                       netns=server.netns, what="dhcp", stdout=out,
                                       stderr=subprocess.STDOUT)
            until(lambda: "dhcp.listen" in log.read_text() or dhcp.poll() is not None,
                  "the server listening", 60, log.read_text)
            lab.popen_in_ns(["dnsmasq", "--no-daemon", "--port=0", "--no-resolv", "--no-hosts",
                             f"--pid-file={tmp_path / 'relay.pid'}", "--conf-file=/dev/null",
                             f"--dhcp-relay={RELAY},{SERVER}", "--interface=eth1",
                             f"--dhcp-relay={UNSERVED},{SERVER}", "--interface=eth2"],
                            netns=router.netns, what="dhcp relay",
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            events = UdhcpcEvents(tmp_path / "client" / "events")
            hook = tmp_path / "client" / "hook"
            hook.parent.mkdir()
            hook.write_text(HOOK)
            hook.chmod(0o755)
            proc = subprocess.Popen(["ip", "netns", "exec", client, str(udhcpc.busybox),
                                     "udhcpc", "-f", "-i", "eth0", "-s", str(hook)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            try:
                until(lambda: [k for k, _ in events.read()][-1:] == ["bound"],
                      "the relayed client bound", 60,
                      lambda: f"{events.read()}\n{log.read_text()[-3000:]}")
                bound = events.read()[-1][1]
                assert IPv4Address("10.97.5.100") <= IPv4Address(bound["ip"]) <= \
                    IPv4Address("10.97.5.149"), bound
                assert (bound["mask"], bound["router"], bound["serverid"]) == (
                    "24", str(RELAY), str(SERVER)), bound
                seen = len(events.read())
                os.kill(proc.pid, signal.SIGUSR1)  # renew now: unicast to the server
                until(lambda: len(events.read()) > seen, "the renewal", 60,
                      lambda: f"{events.read()}\n{log.read_text()[-3000:]}")
                kind, renewed = events.read()[seen]
                assert (kind, renewed.get("ip")) == ("renew", bound["ip"]), events.read()
            finally:
                proc.terminate()
                proc.wait(10)
            # The segment without a pool: 3 DISCOVERs relayed, nothing offered, one line why.
            stray_lease = udhcpc.lease(
                lambda *argv, timeout: subprocess.run(["ip", "netns", "exec", stray, *argv],
                                                      timeout=timeout, check=False,
                                                      capture_output=True),
                "eth0", tries=3)
            assert stray_lease == {}, stray_lease
            lines = [line for line in log.read_text().splitlines()
                     if "dhcp.relay_unserved" in line]
            assert len(lines) == 1 and f"relay={UNSERVED} " in lines[0], lines
            # A known node on either relayed segment: its fixed address is a reservation on
            # SUBNET only, unusable there; nothing offered (before: it bound 10.97.0.11 on
            # both), and one line says why.
            moved: dict[str, str | None] = {}  # namespace: the address bound, if any
            for namespace in (stray, client):
                for step in (("down",), ("address", NODE_MAC), ("up",)):
                    subprocess.run(["ip", "-n", namespace, "link", "set", "eth0", *step],
                                   check=True)
                moved[namespace] = udhcpc.lease(
                    lambda *argv, timeout, ns=namespace: subprocess.run(
                        ["ip", "netns", "exec", ns, *argv], timeout=timeout, check=False,
                        capture_output=True),
                    "eth0", tries=3).get("ip")
            assert moved == {stray: None, client: None}, moved
            nodes = [line for line in log.read_text().splitlines()
                     if "dhcp.node_off_segment" in line]
            assert len(nodes) == 1, nodes
            assert f"relay={UNSERVED} mac={NODE_MAC} node=node01 count=1 " in nodes[0], nodes
            assert dhcp.poll() is None, log.read_text()
            print(json.dumps({"bound": bound, "renewed": renewed, "unserved": lines,
                              "node_off_segment": nodes}))
        finally:
            for namespace in (client, stray):
                subprocess.run(["ip", "netns", "del", namespace], check=False)
