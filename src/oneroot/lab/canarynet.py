"""A `lab try` canary's private network, where the server's network is real.

The canary must never answer, ask or be seen on the real cluster segment. So it gets a
namespace of its own (`oneroot-try-…`, a `Lab` without a server address) that mirrors the
segment: its bridge carries the canary's tap (source-guarded to its MAC and address) and one
veth, the uplink, whose other end is in the server's namespace (where `oneroot serve` runs):

    canary VM ─ tap0 ─ br0 (private ns) ─ veth ═ uplink (server's ns) ─ serve's sockets
                         └ canary DHCP (lab.canary_dhcp)              ╳ the real interface

In the server's namespace the uplink has a host route to the canary's address (from the
server's address), no IPv6, no forwarding, and the nftables tables of
`render.canarynet.render_uplink_guard`: only the canary's own unicast traffic to the server's
services passes; nothing is routed on. The canary's DHCP is answered inside the private
namespace (its broadcasts have nowhere else to go). Everything goes with the namespace (the
veth pair, so the route) and the two tables, which `teardown` and the next `lab try`'s
`clean_stale` remove (state in /run/oneroot/lab-try, as the lab's).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from oneroot.errors import ExternalToolError
from oneroot.lab.netns import Lab, Tap
from oneroot.net import MacAddress
from oneroot.netpin import run_nft
from oneroot.render.canarynet import (
    TABLE_PREFIX,
    UplinkGuard,
    render_private_fence,
    render_uplink_guard,
    render_uplink_unguard,
)

log = logging.getLogger(__name__)

TRY_STATE_DIR = Path("/run/oneroot/lab-try")
TRY_NETNS_PREFIX = "oneroot-try-"
UPLINK_PREFIX = "tryup"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSegment:
    """The real segment as the server sees it: where serve runs and what it serves on."""

    netns: str | None  # the server's namespace; None: this process's own
    interface: str  # the serving interface, on the real segment
    address: ipaddress.IPv4Interface  # the server's address there, with the segment's prefix
    service: tuple[ipaddress.IPv4Address, ...] = ()  # more server addresses (ha_servers)
    http_port: int = 8080


def _run(segment_netns: str | None, argv: Sequence[str]) -> str:
    prefix = ["ip", "netns", "exec", segment_netns] if segment_netns else []
    done = subprocess.run([*prefix, *argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ExternalToolError(f"`{' '.join(argv)}` failed: {done.stderr.strip()}",
                                hint="lab try needs root on the server (CAP_NET_ADMIN)")
    return done.stdout


def find_segment(interface: str, server: ipaddress.IPv4Address, *, netns: str | None = None,
                 service: tuple[ipaddress.IPv4Address, ...] = (), http_port: int = 8080
                 ) -> ServerSegment | None:
    """The segment `interface` carries `server` on, in `netns`; None if it does not here."""
    done = subprocess.run([*(["ip", "-n", netns] if netns else ["ip"]), "-j", "-4", "addr",
                           "show", "dev", interface], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        return None
    for link in json.loads(done.stdout or "[]"):
        for a in link.get("addr_info", []):
            if a.get("local") == str(server):
                return ServerSegment(netns=netns, interface=interface, http_port=http_port,
                                     address=ipaddress.IPv4Interface(f"{server}/"
                                                                     f"{a['prefixlen']}"),
                                     service=service)
    return None


def neighbours(segment: ServerSegment) -> set[ipaddress.IPv4Address]:
    """Addresses the server has seen answer on the real segment (a canary must not take one:
    its host route would hide that host from the server)."""
    out = _run(segment.netns, ["ip", "-j", "-4", "neigh", "show", "dev", segment.interface])
    return {ipaddress.IPv4Address(n["dst"]) for n in json.loads(out or "[]")
            if not {"FAILED", "INCOMPLETE"} & set(n.get("state", []))}


def clean_stale(segment_netns: str | None, state_dir: Path = TRY_STATE_DIR) -> list[str]:
    """Private namespaces of `lab try`s that are gone, and their uplink tables."""
    removed = Lab.cleanup_stale(state_dir)
    tables = _run(segment_netns, ["nft", "list", "tables"])
    links = _run(segment_netns, ["ip", "-o", "link", "show"])
    for family, table in re.findall(rf"^table (inet|arp) ({TABLE_PREFIX}\w+)$", tables, re.M):
        uplink = table.removeprefix(TABLE_PREFIX)
        if not re.search(rf"^\d+: {re.escape(uplink)}[@:]", links, re.M):
            run_nft(f"table {family} {table}\ndelete table {family} {table}\n",
                    netns=segment_netns)
            removed.append(f"{family} {table}")
    return removed


class CanaryNet:
    """The private namespace of one canary and its guarded uplink; `with`, or `teardown`."""

    def __init__(self, lab: Lab, segment: ServerSegment, uplink: str,
                 canary: ipaddress.IPv4Address, mac: MacAddress) -> None:
        self.lab, self.segment, self.uplink = lab, segment, uplink
        self.canary, self.mac = canary, mac

    @classmethod
    def create(cls, segment: ServerSegment, *, canary: ipaddress.IPv4Address,
               mac: MacAddress, workdir: Path, state_dir: Path = TRY_STATE_DIR) -> CanaryNet:
        lab = Lab.create(subnet=segment.address.network, server_address=segment.address.ip,
                         state_dir=state_dir, router_advertisements=False, workdir=workdir,
                         netns_prefix=TRY_NETNS_PREFIX, address_bridge=False)
        net = cls(lab, segment, UPLINK_PREFIX + lab.state.name.rsplit("-", 1)[1], canary, mac)
        try:
            net._connect()
        except BaseException:
            net.teardown()
            raise
        log.info("canarynet.up netns=%s uplink=%s canary=%s", lab.netns, net.uplink, canary)
        return net

    def _connect(self) -> None:
        seg, up, lab = self.segment, self.uplink, self.lab
        host = ["-n", seg.netns] if seg.netns else []
        lab.run_in_ns(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                       "net.ipv6.conf.default.disable_ipv6=1"])
        _run(None, ["ip", *host, "link", "add", up, "type", "veth", "peer", "name", "uplink",
                    "netns", lab.netns])
        _run(seg.netns, ["sysctl", "-q", "-w", f"net.ipv6.conf.{up}.disable_ipv6=1",
                         f"net.ipv4.conf.{up}.forwarding=0", f"net.ipv4.conf.{up}.rp_filter=1"])
        run_nft(render_uplink_guard(UplinkGuard(
            uplink=up, canary=self.canary, servers=(seg.address.ip, *seg.service),
            http_port=seg.http_port)), netns=seg.netns)
        # A host that answers ARP only for the incoming interface's own addresses
        # (arp_ignore ≥ 1) needs the server's address on the uplink too (as a /32: no route).
        if _run(seg.netns, ["sysctl", "-n", "net.ipv4.conf.all.arp_ignore"]).strip() != "0":
            _run(None, ["ip", *host, "addr", "add", f"{seg.address.ip}/32", "dev", up,
                        "noprefixroute"])
        _run(None, ["ip", *host, "link", "set", up, "up"])
        _run(None, ["ip", *host, "route", "add", f"{self.canary}/32", "dev", up, "src",
                    str(seg.address.ip)])
        # DHCP stays on the private bridge (answered there, renewals too: lab.canary_dhcp).
        run_nft(render_private_fence("uplink"), netns=lab.netns)
        _run(None, ["ip", "-n", lab.netns, "link", "set", "uplink", "master", lab.bridge,
                    "up"])

    def add_tap(self) -> Tap:
        """The canary's tap on the private bridge, guarded to its MAC and address."""
        tap = self.lab.add_tap("tap0")
        self.lab.guard_port(tap, mac=self.mac, address=self.canary)
        return tap

    def answer_dhcp(self, doc: str) -> None:
        """The canary's DHCP answered on the private bridge (`lab.canary_dhcp`)."""
        with (self.lab.workdir / "canary-dhcp.log").open("ab") as log_file:
            self.lab.popen_in_ns([sys.executable, "-m", "oneroot.lab.canary_dhcp",
                                  self.lab.bridge, doc], what="canary-dhcp",
                                 stdout=subprocess.DEVNULL, stderr=log_file)

    def teardown(self) -> None:
        """The uplink's tables, the uplink (so its route: the namespace's veth would go with
        the namespace, but the kernel removes that later), then the namespace."""
        host = ["-n", self.segment.netns] if self.segment.netns else []
        try:
            run_nft(render_uplink_unguard(self.uplink), netns=self.segment.netns)
            subprocess.run(["ip", *host, "link", "del", self.uplink], capture_output=True,
                           check=False)
        finally:
            self.lab.teardown()
        log.info("canarynet.down netns=%s", self.lab.netns)

    def __enter__(self) -> CanaryNet:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.teardown()

