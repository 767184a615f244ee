"""Fuzz the DHCP codec: random and mutated packets through `parse_packet`.

Only MalformedPacket may escape; a decoded packet must re-encode and decode to itself.
    python fuzz/fuzz_dhcp.py [N] [SEED]        (N defaults to 10000)
"""

from __future__ import annotations

import contextlib
import random
import sys
from ipaddress import IPv4Address

from oneroot.errors import MalformedPacket
from oneroot.proto.dhcp import BootOp, DhcpOptions, DhcpPacket, parse_packet


def _seed_packets(rng: random.Random) -> list[bytes]:
    """Well-formed packets to mutate: a PXE DISCOVER, a relayed REQUEST, an overloaded reply."""
    discover = DhcpPacket(
        op=BootOp.REQUEST, xid=rng.getrandbits(32), chaddr=bytes.fromhex("525400123456"),
        options=DhcpOptions({53: b"\x01", 55: bytes((1, 3, 6, 12, 43, 60, 66, 67, 175)),
                             57: b"\x05\xc0", 60: b"PXEClient:Arch:00007:UNDI:003016",
                             93: b"\x00\x07", 94: b"\x01\x03\x10",
                             97: b"\x00" + bytes(range(16)), 77: b"iPXE"}))
    request = DhcpPacket(
        op=BootOp.REQUEST, xid=7, giaddr=IPv4Address("10.0.0.254"),
        chaddr=bytes.fromhex("525400aabbcc"),
        options=DhcpOptions({53: b"\x03", 50: bytes((10, 0, 0, 5)), 54: bytes((10, 0, 0, 1)),
                             82: b"\x01\x04abcd\x02\x02xy", 43: bytes(300)}))
    reply = DhcpPacket(op=BootOp.REPLY, xid=9,
                       options=DhcpOptions({53: b"\x02", 43: b"x" * 250, 125: b"y" * 100,
                                            224: b"z" * 50}))
    return [discover.to_bytes(), request.to_bytes(), reply.to_bytes(max_size=576)]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(6)
        if choice == 0 and buf:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif choice == 1 and buf:
            del buf[rng.randrange(min(len(buf) - 1, 230), len(buf)) :]
        elif choice == 2:
            pos = rng.randrange(len(buf) + 1)
            buf[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif choice == 3 and len(buf) > 240:  # aim at the options: lengths and codes
            pos = rng.randrange(240, len(buf))
            buf[pos] = rng.choice((0, 1, 52, 53, 255, rng.randrange(256)))
        elif choice == 4 and len(buf) > 240:
            pos = rng.randrange(240, len(buf))
            buf[pos:pos] = bytes((52, 1, rng.randrange(5)))
        elif buf:
            start = rng.randrange(len(buf))
            buf[start:start] = buf[start : start + rng.randint(1, 64)]
    return bytes(buf)


def run(count: int = 10000, seed: int = 0) -> int:
    """Feed `count` inputs; return how many parsed. Raises on any non-MalformedPacket error."""
    rng = random.Random(seed)
    seeds = _seed_packets(rng)
    parsed = 0
    for i in range(count):
        if i % 5 == 0:
            data = rng.randbytes(rng.randint(0, 600))
            if rng.random() < 0.5 and len(data) >= 240:
                data = data[:236] + b"\x63\x82\x53\x63" + data[240:]
        else:
            data = _mutate(rng, rng.choice(seeds))
        try:
            packet = parse_packet(data)
        except MalformedPacket:
            continue
        parsed += 1
        again = parse_packet(packet.to_bytes())
        if again != packet:
            raise AssertionError(f"round trip differs for input {data.hex()}")
        for accessor in ("message_type", "requested_address", "server_id", "client_arch",
                         "max_message_size", "hostname", "is_ipxe", "is_pxe_client"):
            with contextlib.suppress(MalformedPacket):
                getattr(packet, accessor)
    return parsed


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    s = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    ok = run(n, s)
    print(f"fuzz_dhcp: {n} inputs, {ok} parsed, only MalformedPacket raised")
