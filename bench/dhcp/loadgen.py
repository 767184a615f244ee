"""DHCP load generator: full DORA exchanges with distinct MACs, `concurrency` at a time.

Runs inside the client namespace; prints one JSON line of results. Bounded by --seconds and
--max-exchanges. Every client sets the broadcast flag, so each server answers by broadcast.
    python loadgen.py --interface cli0 --concurrency 8 --seconds 4 --mac-base 0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import struct
import time
from ipaddress import IPv4Address

from oneroot.proto.dhcp import BootOp, DhcpOptions, DhcpPacket, MessageType, parse_packet

REPLY_TIMEOUT = 1.0


def mac_for(index: int) -> bytes:
    """02:00:00:xx:xx:xx — the locally administered block the oneroot bench server knows."""
    return b"\x02\x00\x00" + struct.pack("!I", index)[1:]


class Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiting: dict[int, asyncio.Future[DhcpPacket]] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            packet = parse_packet(data)
        except Exception:
            return
        future = self.waiting.pop(packet.xid, None)
        if future is not None and not future.done():
            future.set_result(packet)

    async def exchange(self, packet: DhcpPacket) -> DhcpPacket | None:
        future: asyncio.Future[DhcpPacket] = asyncio.get_running_loop().create_future()
        self.waiting[packet.xid] = future
        assert self.transport is not None
        self.transport.sendto(packet.to_bytes(), ("255.255.255.255", 67))
        try:
            return await asyncio.wait_for(future, REPLY_TIMEOUT)
        except TimeoutError:
            self.waiting.pop(packet.xid, None)
            return None


async def main(args: argparse.Namespace) -> dict[str, object]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.setsockopt(socket.SOL_SOCKET, 25, args.interface.encode())
    sock.bind(("0.0.0.0", 68))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(Client, sock=sock)
    client.transport = transport
    counter = iter(range(args.mac_base, args.mac_base + 10_000_000))
    done = 0
    failed = 0
    latencies: list[float] = []
    deadline = time.monotonic() + args.seconds

    async def worker() -> None:
        nonlocal done, failed
        while time.monotonic() < deadline and done + failed < args.max_exchanges:
            index = next(counter)
            chaddr = mac_for(index)
            started = time.monotonic()
            xid = (index * 2 + 1) & 0xFFFFFFFF
            offer = await client.exchange(DhcpPacket(
                op=BootOp.REQUEST, xid=xid, chaddr=chaddr, flags=0x8000, options=DhcpOptions(
                {53: bytes((MessageType.DISCOVER,)), 55: bytes((1, 3, 6, 12, 15, 51, 54))})))
            if offer is None or offer.message_type is not MessageType.OFFER:
                failed += 1
                continue
            server_id = offer.server_id or IPv4Address(0)
            ack = await client.exchange(DhcpPacket(
                op=BootOp.REQUEST, xid=xid, chaddr=chaddr, flags=0x8000, options=DhcpOptions(
                {53: bytes((MessageType.REQUEST,)), 50: offer.yiaddr.packed,
                 54: server_id.packed, 55: bytes((1, 3, 6, 12, 15, 51, 54))})))
            if ack is None or ack.message_type is not MessageType.ACK:
                failed += 1
                continue
            done += 1
            latencies.append(time.monotonic() - started)

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    elapsed = time.monotonic() - started
    latencies.sort()
    return {
        "concurrency": args.concurrency, "exchanges": done, "failed": failed,
        "seconds": round(elapsed, 3), "rate": round(done / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2) if latencies else None,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--interface", required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--max-exchanges", type=int, default=40000)
    parser.add_argument("--mac-base", type=int, default=0)
    print(json.dumps(asyncio.run(main(parser.parse_args()))))
