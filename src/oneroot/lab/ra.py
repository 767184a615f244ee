"""A minimal IPv6 router-advertisement sender for the lab bridge.

QEMU's iPXE ROM waits ~15 s for an IPv6 router advertisement before it reports its network
configured; an RA with a ULA prefix (and the "no DHCPv6" flags) ends that wait at once. This
module builds the packet (pure) and sends it: every `interval` seconds and at once when a
Router Solicitation arrives. It runs inside the lab's namespace as its own process:

    ip netns exec NS python -m oneroot.lab.ra br0 --prefix fd00:1ab::/64

The router lifetime is 0: nodes learn the prefix, but nobody takes the lab for a default router.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import select
import socket
import struct
import time
from collections.abc import Sequence
from pathlib import Path

from oneroot.errors import LabError, MalformedPacket
from oneroot.lab.netns import DEFAULT_PREFIX
from oneroot.net import MacAddress

log = logging.getLogger(__name__)

ICMPV6_ROUTER_SOLICITATION = 133
ICMPV6_ROUTER_ADVERTISEMENT = 134
ALL_NODES = "ff02::1"
ALL_ROUTERS = "ff02::2"

_OPT_SOURCE_LINK_ADDRESS = 1
_OPT_PREFIX_INFORMATION = 3
_OPT_MTU = 5
_PREFIX_ON_LINK = 0x80
_PREFIX_AUTONOMOUS = 0x40


def router_advertisement(*, source_mac: MacAddress, prefix: ipaddress.IPv6Network,
                         router_lifetime: int = 0, valid_lifetime: int = 86400,
                         preferred_lifetime: int = 14400, mtu: int | None = None,
                         hop_limit: int = 64) -> bytes:
    """An ICMPv6 Router Advertisement (RFC 4861 §4.2), checksum left 0 for the kernel to fill.

    Managed and other-config flags are clear: addresses come from SLAAC, nothing from DHCPv6.
    """
    if prefix.prefixlen != 64:
        raise LabError(f"SLAAC needs a /64 prefix, not /{prefix.prefixlen}")
    body = struct.pack("!BBHBBHII", ICMPV6_ROUTER_ADVERTISEMENT, 0, 0, hop_limit, 0,
                       router_lifetime, 0, 0)
    body += struct.pack("!BB6s", _OPT_SOURCE_LINK_ADDRESS, 1, source_mac.packed)
    body += struct.pack("!BBBBIII16s", _OPT_PREFIX_INFORMATION, 4, prefix.prefixlen,
                        _PREFIX_ON_LINK | _PREFIX_AUTONOMOUS, valid_lifetime, preferred_lifetime,
                        0, prefix.network_address.packed)
    if mtu is not None:
        body += struct.pack("!BBHI", _OPT_MTU, 1, 0, mtu)
    return body


def icmpv6_type(message: bytes) -> int:
    """The type of an ICMPv6 message as a raw ICMPv6 socket delivers it (no IPv6 header)."""
    if len(message) < 4:
        raise MalformedPacket(f"ICMPv6 message of {len(message)} bytes")
    return message[0]


def interface_mac(interface: str, sys_class_net: Path = Path("/sys/class/net")) -> MacAddress:
    try:
        return MacAddress.parse((sys_class_net / interface / "address").read_text())
    except OSError as exc:
        raise LabError(f"no interface {interface!r} in this namespace") from exc


class RouterAdvertiser:
    """Owns one raw ICMPv6 socket bound to `interface`; `serve()` loops until killed."""

    def __init__(self, interface: str, *, prefix: ipaddress.IPv6Network = DEFAULT_PREFIX,
                 interval: float = 2.0) -> None:
        self.interface = interface
        self.interval = interval
        self.index = socket.if_nametoindex(interface)
        self.packet = router_advertisement(source_mac=interface_mac(interface), prefix=prefix)
        self.sent = 0
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        # RFC 4861: receivers drop neighbour discovery packets whose hop limit is not 255.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        mreq = socket.inet_pton(socket.AF_INET6, ALL_ROUTERS) + struct.pack("@I", self.index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        self.sock = sock

    def close(self) -> None:
        self.sock.close()

    def advertise(self) -> bool:
        """Send one RA to all nodes; False while the interface has no usable link-local
        address yet (a bridge gets one only once a port has carrier)."""
        try:
            self.sock.sendto(self.packet, (ALL_NODES, 0, 0, self.index))
        except OSError as exc:
            log.debug("ra.send_failed interface=%s error=%s", self.interface, exc)
            return False
        self.sent += 1
        return True

    def serve(self) -> None:
        next_at = 0.0
        while True:
            now = time.monotonic()
            if now >= next_at:
                # Retry soon while sending fails, so the first RA leaves as early as possible.
                next_at = now + (self.interval if self.advertise() else 0.2)
            ready, _, _ = select.select([self.sock], [], [], max(0.0, next_at - now))
            if ready:
                data, peer = self.sock.recvfrom(2048)
                try:
                    kind = icmpv6_type(data)
                except MalformedPacket:
                    continue
                if kind == ICMPV6_ROUTER_SOLICITATION:
                    log.info("ra.solicited peer=%s", peer[0])
                    self.advertise()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oneroot.lab.ra",
                                     description="Send IPv6 router advertisements on a lab link")
    parser.add_argument("interface")
    parser.add_argument("--prefix", type=ipaddress.IPv6Network, default=DEFAULT_PREFIX)
    parser.add_argument("--interval", type=float, default=2.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
    advertiser = RouterAdvertiser(args.interface, prefix=args.prefix, interval=args.interval)
    log.info("ra.start interface=%s prefix=%s", args.interface, args.prefix)
    try:
        advertiser.serve()
    except KeyboardInterrupt:
        pass
    finally:
        advertiser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
