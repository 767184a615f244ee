"""A test's witness on a link: every frame that carries a MAC or an IPv4 address it watches
for, anywhere in the frame (Ethernet source, ARP fields, DHCP's chaddr, IP headers), one line
each in a file. Runs as its own process inside a namespace:

    ip netns exec NS python -m oneroot.testing.sniff eth0 OUT --mac 52:54:00:… --ip 10.0.0.9

`OUT` gets `ready` once the socket is bound, then `frame LEN HEX…` per match.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import socket
from collections.abc import Sequence
from pathlib import Path

from oneroot.net import MacAddress

ETH_P_ALL = 0x0003


def watch(interface: str, out: Path, needles: list[bytes]) -> None:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((interface, 0))
    with out.open("a") as f:
        print("ready", file=f, flush=True)
        while True:
            frame = sock.recv(65536)
            if any(n in frame for n in needles):
                print(f"frame {len(frame)} {frame[:64].hex()}", file=f, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oneroot.testing.sniff")
    parser.add_argument("interface")
    parser.add_argument("out", type=Path)
    parser.add_argument("--mac", action="append", default=[])
    parser.add_argument("--ip", action="append", default=[])
    args = parser.parse_args(argv)
    needles = [MacAddress.parse(m).packed for m in args.mac]
    needles += [ipaddress.IPv4Address(a).packed for a in args.ip]
    with contextlib.suppress(KeyboardInterrupt):
        watch(args.interface, args.out, needles)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
