"""Fuzz the TFTP codec: random and mutated datagrams through `parse_packet`.

Only MalformedPacket may escape; a decoded packet must re-encode to the same bytes and decode
to itself.
    python fuzz/fuzz_tftp.py [N] [SEED]        (N defaults to 10000)
"""

from __future__ import annotations

import random
import sys

from oneroot.errors import MalformedPacket
from oneroot.proto.tftp import (
    Ack,
    Data,
    Error,
    OptionAck,
    ReadRequest,
    WriteRequest,
    parse_packet,
)

_SEEDS = [
    ReadRequest(filename="pxelinux.0", mode="octet").to_bytes(),
    ReadRequest(filename="pxelinux.cfg/01-52-54-00-00-00-01", mode="netascii",
                options=(("tsize", "0"), ("blksize", "1468"), ("windowsize", "16"),
                         ("timeout", "1"))).to_bytes(),
    WriteRequest(filename="up", mode="octet", options=(("tsize", "123"),)).to_bytes(),
    Data(block=65535, data=bytes(range(64))).to_bytes(),
    Ack(block=1).to_bytes(),
    Error(code=1, message="File not found").to_bytes(),
    OptionAck(options=(("blksize", "1468"), ("tsize", "42"))).to_bytes(),
]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(7)
        if choice == 0 and buf:  # flip a byte
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif choice == 1 and buf:  # truncate
            del buf[rng.randrange(len(buf)) :]
        elif choice == 2:  # insert junk
            pos = rng.randrange(len(buf) + 1)
            buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif choice == 3 and buf:  # move, add or drop NULs: the string framing
            pos = rng.randrange(len(buf))
            if buf[pos] == 0 and rng.random() < 0.5:
                del buf[pos]
            else:
                buf[pos:pos] = b"\0"
        elif choice == 4 and len(buf) >= 2:  # another opcode
            buf[0:2] = rng.randrange(9).to_bytes(2, "big")
        elif choice == 5 and buf:  # duplicate a slice
            start = rng.randrange(len(buf))
            buf[start:start] = buf[start : start + rng.randint(1, 16)]
        else:  # high bytes: surrogateescape paths
            buf[rng.randrange(len(buf) + 1) : 0] = bytes([rng.randrange(0x80, 0x100)])
    return bytes(buf)


def run(count: int = 10000, seed: int = 0) -> int:
    """Feed `count` inputs; return how many parsed (the rest raised MalformedPacket)."""
    rng = random.Random(seed)
    parsed = 0
    for _ in range(count):
        if rng.random() < 0.2:
            data = rng.randbytes(rng.randint(0, 40))
        else:
            data = _mutate(rng, rng.choice(_SEEDS))
        try:
            packet = parse_packet(data)
        except MalformedPacket:
            continue
        parsed += 1
        encoded = packet.to_bytes()
        assert encoded == data, (data, packet)
        assert parse_packet(encoded) == packet
    return parsed


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    s = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    ok = run(n, s)
    print(f"fuzz_tftp: {n} inputs, {ok} parsed, {n - ok} MalformedPacket, nothing else raised")
