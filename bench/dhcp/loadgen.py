"""DHCP load generator: full DORA exchanges with distinct MACs, `concurrency` at a time.

Runs inside the client namespace; prints one JSON line of results. Bounded by --seconds and
--max-exchanges. Every client sets the broadcast flag, so each server answers by broadcast.
    python loadgen.py --interface cli0 --concurrency 8 --seconds 4 --mac-base 0

The generator shares the machine's CPUs with the server under test, so it is kept cheap: the
DISCOVER and REQUEST are byte templates patched in place (xid, chaddr, requested address,
server id), replies are read at fixed offsets plus a walk of the options, and each exchange is a
pair of callbacks, not a coroutine (no task, no `wait_for` per message); one timer sweeps the
exchanges that have waited longer than the reply timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import struct
import time

from oneroot.proto.dhcp import BootOp, DhcpOptions, DhcpPacket, MessageType

REPLY_TIMEOUT = 1.0
SWEEP_INTERVAL = 0.05
PRL = bytes((1, 3, 6, 12, 15, 51, 54))
_XID = slice(4, 8)
_YIADDR = slice(16, 20)
_CHADDR = slice(28, 34)
_OPTIONS_START = 240  # 236-byte BOOTP header + magic cookie


def mac_for(index: int) -> bytes:
    """02:00:00:xx:xx:xx — the locally administered block the oneroot bench server knows."""
    return b"\x02\x00\x00" + struct.pack("!I", index)[1:]


def _option_offsets(data: bytes) -> dict[int, int]:
    """Where each option's value starts in an encoded packet."""
    offsets: dict[int, int] = {}
    i = _OPTIONS_START
    while i < len(data) and data[i] != 255:
        if data[i] == 0:
            i += 1
            continue
        offsets[data[i]] = i + 2
        i += 2 + data[i + 1]
    return offsets


def _read_reply(data: bytes) -> tuple[int, int, bytes, bytes] | None:
    """(xid, message type, yiaddr, server id) of a BOOTREPLY; None if it is not one."""
    if len(data) < _OPTIONS_START or data[0] != BootOp.REPLY:
        return None
    mtype = 0
    server_id = b"\0\0\0\0"
    i = _OPTIONS_START
    end = len(data)
    while i + 1 < end:
        code = data[i]
        if code == 255:
            break
        if code == 0:
            i += 1
            continue
        length = data[i + 1]
        if code == 53 and length == 1:
            mtype = data[i + 2]
        elif code == 54 and length == 4:
            server_id = data[i + 2 : i + 6]
        i += 2 + length
    return int.from_bytes(data[_XID], "big"), mtype, data[_YIADDR], server_id


DISCOVER = DhcpPacket(op=BootOp.REQUEST, xid=0, flags=0x8000, options=DhcpOptions(
    {53: bytes((MessageType.DISCOVER,)), 55: PRL})).to_bytes()
REQUEST = DhcpPacket(op=BootOp.REQUEST, xid=0, flags=0x8000, options=DhcpOptions(
    {53: bytes((MessageType.REQUEST,)), 50: bytes(4), 54: bytes(4), 55: PRL})).to_bytes()
_REQUESTED_AT = _option_offsets(REQUEST)[50]
_SERVER_ID_AT = _option_offsets(REQUEST)[54]


class Generator(asyncio.DatagramProtocol):
    def __init__(self, args: argparse.Namespace, done: asyncio.Future[None]) -> None:
        self.args = args
        self.finished = done
        self.transport: asyncio.DatagramTransport | None = None
        self.next_index = args.mac_base
        self.deadline = 0.0
        # xid -> (chaddr, started, reply deadline, waiting for OFFER (else ACK))
        self.waiting: dict[int, tuple[bytes, float, float, bool]] = {}
        self.active = 0
        self.done = 0
        self.failed = 0
        self.latencies: list[float] = []

    def start(self, concurrency: int, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        for _ in range(concurrency):
            self.active += 1
            self.begin()
        asyncio.get_running_loop().call_later(SWEEP_INTERVAL, self.sweep)

    def begin(self) -> None:
        """Start a new exchange, or retire this slot when the run is over."""
        now = time.monotonic()
        if now >= self.deadline or self.done + self.failed >= self.args.max_exchanges:
            self.active -= 1
            if self.active == 0 and not self.finished.done():
                self.finished.set_result(None)
            return
        index = self.next_index
        self.next_index += 1
        xid = (index * 2 + 1) & 0xFFFFFFFF
        chaddr = mac_for(index)
        packet = bytearray(DISCOVER)
        packet[_XID] = xid.to_bytes(4, "big")
        packet[_CHADDR] = chaddr
        self.waiting[xid] = (chaddr, now, now + REPLY_TIMEOUT, True)
        self.send(packet)

    def send(self, packet: bytearray) -> None:
        assert self.transport is not None
        self.transport.sendto(packet, ("255.255.255.255", 67))

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = _read_reply(data)
        if reply is None:
            return
        xid, mtype, yiaddr, server_id = reply
        state = self.waiting.get(xid)
        if state is None:
            return
        chaddr, started, _, wants_offer = state
        if wants_offer:
            if mtype != MessageType.OFFER:
                return
            packet = bytearray(REQUEST)
            packet[_XID] = xid.to_bytes(4, "big")
            packet[_CHADDR] = chaddr
            packet[_REQUESTED_AT : _REQUESTED_AT + 4] = yiaddr
            packet[_SERVER_ID_AT : _SERVER_ID_AT + 4] = server_id
            self.waiting[xid] = (chaddr, started, time.monotonic() + REPLY_TIMEOUT, False)
            self.send(packet)
            return
        if mtype != MessageType.ACK:
            if mtype == MessageType.NAK:
                del self.waiting[xid]
                self.failed += 1
                self.begin()
            return
        del self.waiting[xid]
        self.done += 1
        self.latencies.append(time.monotonic() - started)
        self.begin()

    def sweep(self) -> None:
        now = time.monotonic()
        expired = [xid for xid, state in self.waiting.items() if state[2] <= now]
        for xid in expired:
            del self.waiting[xid]
            self.failed += 1
            self.begin()
        if not self.finished.done():
            asyncio.get_running_loop().call_later(SWEEP_INTERVAL, self.sweep)


async def main(args: argparse.Namespace) -> dict[str, object]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.setsockopt(socket.SOL_SOCKET, 25, args.interface.encode())
    sock.bind(("0.0.0.0", 68))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()
    transport, generator = await loop.create_datagram_endpoint(
        lambda: Generator(args, finished), sock=sock)
    generator.transport = transport
    started = time.monotonic()
    cpu_started = time.process_time()
    generator.start(args.concurrency, args.seconds)
    await finished
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu_started
    transport.close()
    latencies = sorted(generator.latencies)
    done = generator.done
    return {
        "concurrency": args.concurrency, "exchanges": done, "failed": generator.failed,
        "seconds": round(elapsed, 3), "rate": round(done / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2) if latencies else None,
        "loadgen_cpu_s": round(cpu, 2),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--interface", required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--max-exchanges", type=int, default=60000)
    parser.add_argument("--mac-base", type=int, default=0)
    print(json.dumps(asyncio.run(main(parser.parse_args()))))
