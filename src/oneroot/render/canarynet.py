"""nftables rules for a `lab try` canary's uplink on a real network: pure text from values.

The canary's private namespace reaches the server's namespace through one veth (`uplink`, its
server-side end). `render_uplink_guard` is one `nft -f` transaction, in the server's
namespace, of two tables named after the uplink (`oneroot_try_<uplink>`, inet and arp):

- in: from the uplink only the canary's own address to the server's addresses and service
  ports (TCP: HTTP, rpcbind, NFS, mountd; UDP: TFTP; ICMP echo and unreachable), and replies
  of connections the server opened or accepted; everything else from the uplink, IPv6 too,
  is dropped;
- through: nothing is forwarded from or to the uplink (the server routes for other hosts on
  many clusters: `ip_forward=1`);
- out: the server sends on the uplink only to the canary's address;
- ARP: on the uplink only the canary asking for a server address, and the server asking
  for the canary's.

`render_private_fence` is the private namespace's own `bridge` table: DHCP (UDP 67/68) never
leaves it through the uplink port, neither the canary's unicast renewals to the server nor
the broadcast answers of its DHCP responder (`lab.canary_dhcp`, which answers both there).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from oneroot.render.netpin import HEADER, check_ifname

TABLE_PREFIX = "oneroot_try_"
FENCE_TABLE = "oneroot_try_fence"  # in the private namespace
DHCP_PORTS = (67, 68)
RPCBIND_PORT, NFS_PORT, MOUNTD_PORT, TFTP_PORT = 111, 2049, 20048, 69


@dataclass(frozen=True, slots=True, kw_only=True)
class UplinkGuard:
    """Who may talk over a canary's uplink, and to what."""

    uplink: str  # the veth end in the server's namespace
    canary: ipaddress.IPv4Address
    servers: tuple[ipaddress.IPv4Address, ...]  # the server's address (and service address)
    http_port: int

    @property
    def tcp_ports(self) -> tuple[int, ...]:
        return tuple(sorted({self.http_port, RPCBIND_PORT, NFS_PORT, MOUNTD_PORT}))


def uplink_table(uplink: str) -> str:
    return f"{TABLE_PREFIX}{check_ifname(uplink)}".replace("-", "_").replace(".", "_")


def _elements(items: Sequence[object]) -> str:
    return "{ " + ", ".join(str(i) for i in items) + " }"


def render_uplink_guard(guard: UplinkGuard) -> str:
    """Both tables, created or replaced in one transaction."""
    dev = check_ifname(guard.uplink)
    table, canary = uplink_table(dev), guard.canary
    servers = _elements(sorted(set(guard.servers)))
    inet = [
        "    chain input {",
        "        type filter hook input priority -10; policy accept;",
        f'        iifname "{dev}" ct state established,related accept',
        f'        iifname "{dev}" ip saddr {canary} ip daddr {servers} tcp dport '
        f"{_elements(guard.tcp_ports)} accept",
        f'        iifname "{dev}" ip saddr {canary} ip daddr {servers} udp dport {TFTP_PORT}'
        " accept",
        f'        iifname "{dev}" ip saddr {canary} ip daddr {servers} icmp type '
        "{ echo-request, destination-unreachable } accept",
        f'        iifname "{dev}" counter drop comment "not the canary\'s own service traffic"',
        "    }",
        "    chain forward {",
        "        type filter hook forward priority -10; policy accept;",
        f'        iifname "{dev}" counter drop comment "never routed onto the real network"',
        f'        oifname "{dev}" counter drop',
        "    }",
        "    chain output {",
        "        type filter hook output priority -10; policy accept;",
        f'        oifname "{dev}" ip daddr != {canary} counter drop',
        f'        oifname "{dev}" meta nfproto ipv6 counter drop',
        "    }",
    ]
    arp = [
        "    chain input {",
        "        type filter hook input priority -10; policy accept;",
        f'        iifname "{dev}" arp saddr ip {{ 0.0.0.0, {canary} }} arp daddr ip {servers}'
        " accept",
        f'        iifname "{dev}" counter drop',
        "    }",
        "    chain output {",
        "        type filter hook output priority -10; policy accept;",
        f'        oifname "{dev}" arp daddr ip != {canary} counter drop',
        "    }",
    ]
    lines = [f"# {HEADER}", f"# The uplink {dev} of a lab try canary at {canary}."]
    for family, chains in (("inet", inet), ("arp", arp)):
        lines += [f"table {family} {table}", f"delete table {family} {table}",
                  f"table {family} {table} {{", *chains, "}"]
    return "\n".join(lines) + "\n"


def render_uplink_unguard(uplink: str) -> str:
    """Both tables removed, whether or not they exist."""
    table = uplink_table(uplink)
    return "".join(f"table {f} {table}\ndelete table {f} {table}\n" for f in ("inet", "arp"))


def render_private_fence(uplink_port: str) -> str:
    """The private namespace's bridge table: no DHCP out of `uplink_port` (its veth end)."""
    dev = check_ifname(uplink_port)
    rule = (f'        oifname "{dev}" udp dport {_elements(DHCP_PORTS)} counter drop '
            'comment "DHCP stays in the private namespace"')
    return "\n".join([
        f"# {HEADER}", f"table bridge {FENCE_TABLE}", f"delete table bridge {FENCE_TABLE}",
        f"table bridge {FENCE_TABLE} {{",
        "    chain forward {", "        type filter hook forward priority -10; policy accept;",
        rule, "    }",
        "    chain output {", "        type filter hook output priority -10; policy accept;",
        rule, "    }", "}"]) + "\n"
