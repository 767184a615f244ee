"""A forged VRRPv2 advert (RFC 3768), for tests of keepalived's peer check.

    python -m oneroot.testing.vrrp --to 10.92.0.2 --vrid 51 --address 10.92.0.102 \
        --priority 254 --seconds 6

sends, every half second, an advert from this host claiming to be the master of `vrid` at
`priority`: a keepalived that takes it for a better master drops the address.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import struct
import time

VRRP_PROTO = 112


def _checksum(data: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def advert(*, vrid: int, priority: int, addresses: list[ipaddress.IPv4Address],
           interval: int = 1) -> bytes:
    """The VRRPv2 advertisement (no authentication), checksum filled in."""
    head = struct.pack("!BBBBBBH", 0x21, vrid, priority, len(addresses), 0, interval, 0)
    body = b"".join(a.packed for a in addresses) + bytes(8)
    packet = head + body
    return packet[:6] + struct.pack("!H", _checksum(packet)) + packet[8:]


def send(to: ipaddress.IPv4Address, packet: bytes, *, seconds: float,
         every: float = 0.5) -> int:
    """Send `packet` to `to` (TTL 255, as VRRP requires) until `seconds` have passed."""
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, VRRP_PROTO) as sock:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sock.sendto(packet, (str(to), 0))
            sent += 1
            time.sleep(every)
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--to", type=ipaddress.IPv4Address, required=True)
    parser.add_argument("--vrid", type=int, required=True)
    parser.add_argument("--address", type=ipaddress.IPv4Address, action="append",
                        required=True)
    parser.add_argument("--priority", type=int, default=254)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    sent = send(args.to, advert(vrid=args.vrid, priority=args.priority,
                                addresses=args.address), seconds=args.seconds)
    print(f"sent {sent} adverts")


if __name__ == "__main__":
    main()
