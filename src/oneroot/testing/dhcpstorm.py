"""Many DHCP clients at once from one socket, for tests and benches (run inside a namespace).

    python -m oneroot.testing.dhcpstorm --interface eth0 --clients 1000 --out storm.json

Each simulated client (MAC 02:5x:…, its own xid) runs DISCOVER → first OFFER → REQUEST
(selecting that server) → ACK, starting over on a NAK or after a silence (`retransmit`
seconds); an ACK that comes after it started over is counted as late, not taken (a real
client ignores it too: the address it asked for is no longer its request).
Everything goes to the broadcast address with the broadcast flag set, so every server on the
segment sees every DISCOVER (a storm two servers answer at once). The result records, per
client, the address and server of its ACK, how many NAKs it got and when it was bound: the
caller checks no address was ACKed to two clients.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

from oneroot.errors import MalformedPacket
from oneroot.proto.dhcp import (
    BootOp,
    MessageType,
    parse_packet,
)
from oneroot.testing.dhcpmsg import client_message, numbered_mac

_SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


@dataclass(slots=True)
class Client:
    mac: bytes
    xid: int
    state: str = "init"  # init | selecting | requesting | bound
    sent: float = 0.0
    offer: tuple[IPv4Address, IPv4Address] | None = None  # (address, server id)
    address: str | None = None
    server: str | None = None
    naks: int = 0
    tries: int = 0
    bound_at: float = 0.0
    acks: list[tuple[str, str]] = field(default_factory=list)  # the ACKs it took
    late: int = 0  # ACKs to REQUESTs it had given up (after a retransmit timeout)


def _packet(client: Client, mtype: MessageType) -> bytes:
    selecting = mtype is MessageType.REQUEST and client.offer is not None
    return client_message(mtype, mac=client.mac, xid=client.xid, broadcast=True,
                          requested=client.offer[0] if selecting and client.offer else None,
                          server_id=client.offer[1] if selecting and client.offer else None,
                          prl=bytes((1, 3, 6))).to_bytes()


class Storm(asyncio.DatagramProtocol):
    def __init__(self, clients: list[Client], *, retransmit: float) -> None:
        self.by_xid = {c.xid: c for c in clients}
        self.clients = clients
        self.retransmit = retransmit
        self.transport: asyncio.DatagramTransport | None = None
        self.done = asyncio.Event()
        self.bound = 0
        self.started = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport

    def send(self, client: Client, mtype: MessageType) -> None:
        assert self.transport is not None
        client.sent = time.monotonic()
        client.tries += 1
        client.state = "selecting" if mtype is MessageType.DISCOVER else "requesting"
        self.transport.sendto(_packet(client, mtype), ("255.255.255.255", 67))

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            reply = parse_packet(data)
            mtype = reply.message_type
            server = reply.server_id
        except MalformedPacket:
            return
        client = self.by_xid.get(reply.xid)
        if client is None or reply.op is not BootOp.REPLY or reply.chaddr[:6] != client.mac:
            return
        if mtype is MessageType.OFFER and client.state == "selecting" and server is not None:
            client.offer = (reply.yiaddr, server)
            self.send(client, MessageType.REQUEST)
        elif mtype is MessageType.ACK and server is not None:
            if client.state != "requesting" or client.offer is None or \
                    (reply.yiaddr, server) != client.offer:
                client.late += 1  # an answer to a REQUEST it gave up on (it started over)
                return
            client.acks.append((str(reply.yiaddr), str(server)))
            client.state, client.address, client.server = "bound", str(reply.yiaddr), \
                str(server)
            client.bound_at = time.monotonic() - self.started
            self.bound += 1
            if self.bound == len(self.clients):
                self.done.set()
        elif mtype is MessageType.NAK and client.state == "requesting":
            client.naks += 1
            self.send(client, MessageType.DISCOVER)

    async def retransmit_silent(self) -> None:
        while not self.done.is_set():
            await asyncio.sleep(self.retransmit / 4)
            now = time.monotonic()
            for client in self.clients:
                if client.state != "bound" and now - client.sent > self.retransmit:
                    self.send(client, MessageType.DISCOVER)


def open_socket(interface: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.setsockopt(socket.SOL_SOCKET, _SO_BINDTODEVICE, interface.encode())
    sock.bind(("0.0.0.0", 68))
    sock.setblocking(False)
    return sock


async def run_storm(interface: str, count: int, *, timeout: float, burst: int = 100,
                    retransmit: float = 2.0, prefix: int = 0x50) -> dict[str, object]:
    clients = [Client(mac=numbered_mac(n, prefix), xid=0x5000_0000 + n) for n in range(count)]
    started = time.time()
    loop = asyncio.get_running_loop()
    transport, storm = await loop.create_datagram_endpoint(
        lambda: Storm(clients, retransmit=retransmit), sock=open_socket(interface))
    storm.transport = transport  # connection_made may not have run yet
    keeper = loop.create_task(storm.retransmit_silent())
    try:
        for start in range(0, count, burst):  # bursts, as a rack powered on at once
            for client in clients[start:start + burst]:
                storm.send(client, MessageType.DISCOVER)
            await asyncio.sleep(0.01)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(storm.done.wait(), timeout)
    finally:
        keeper.cancel()
        transport.close()
    seconds = time.monotonic() - storm.started
    return {
        "clients": count, "bound": storm.bound, "seconds": round(seconds, 3),
        "started": started,
        "naks": sum(c.naks for c in clients), "late_acks": sum(c.late for c in clients),
        "leases": {c.mac.hex(":"): {"ip": c.address, "server": c.server, "naks": c.naks,
                                    "bound_at": round(c.bound_at, 3), "acks": c.acks}
                   for c in clients},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interface", required=True)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--prefix", type=lambda t: int(t, 0), default=0x50,
                        help="second byte of the clients' MACs")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    result = asyncio.run(run_storm(args.interface, args.clients, timeout=args.timeout,
                                   prefix=args.prefix))
    args.out.write_text(json.dumps(result))
    print(f"bound {result['bound']}/{args.clients} in {result['seconds']} s, "
          f"naks {result['naks']}", file=sys.stderr)
    return 0 if result["bound"] == args.clients else 1


if __name__ == "__main__":
    sys.exit(main())
