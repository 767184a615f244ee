"""The DHCP service: UDP sockets on one interface around the sans-IO responder.

Datagrams are queued, then handled in batches: decide each, stage its lease change, commit the
batch once (group commit, in a worker thread), and only then send the batch's replies, so no
ACK leaves before its lease is on disk.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address

from oneroot.errors import MalformedPacket
from oneroot.inventory.leases import LeaseStore
from oneroot.model.events import BootEvent
from oneroot.net import MacAddress
from oneroot.proto.dhcp import (
    Decision,
    DhcpMode,
    NetworkConfig,
    NodeBoot,
    parse_packet,
    respond,
)

log = logging.getLogger(__name__)

_QUEUE_LIMIT = 4096  # datagrams waiting; beyond that they are dropped (clients retransmit)
_BATCH_LIMIT = 256
_RECEIVE_BUFFER = 4 * 1024 * 1024
_SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


@dataclass(frozen=True, slots=True)
class _Datagram:
    data: bytes
    peer: tuple[IPv4Address, int]
    port: int
    received: float


def open_dhcp_socket(interface: str, port: int) -> socket.socket:
    """A UDP socket on 0.0.0.0:`port` that only sees and sends on `interface`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, _SO_BINDTODEVICE, interface.encode())
        sock.bind(("0.0.0.0", port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, service: DhcpService, port: int) -> None:
        self.service = service
        self.port = port

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.service._enqueue(data, addr, self.port)

    def error_received(self, exc: Exception) -> None:
        log.warning("dhcp.socket_error port=%d error=%s", self.port, exc)


class DhcpService:
    """DHCP (and, in proxy mode, PXE port 4011) on `interface`, until cancelled."""

    def __init__(self, *, interface: str, server_address: IPv4Address, network: NetworkConfig,
                 lookup: Callable[[MacAddress], NodeBoot | None], leases: LeaseStore,
                 on_event: Callable[[BootEvent], None], port: int = 67, proxy_port: int = 4011,
                 is_reserved: Callable[[IPv4Address], bool] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if network.server_address != server_address:
            raise ValueError("server_address and network.server_address differ")
        self.interface = interface
        self.server_address = server_address
        self.network = network
        self.lookup = lookup
        self.leases = leases
        self.on_event = on_event
        self.port = port
        self.proxy_port = proxy_port
        self.is_reserved = is_reserved
        self.clock = clock
        self._queue: asyncio.Queue[_Datagram] = asyncio.Queue(_QUEUE_LIMIT)
        self._transports: dict[int, asyncio.DatagramTransport] = {}
        self.dropped = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        ports = [self.port]
        if self.network.mode is DhcpMode.PROXY:
            ports.append(self.proxy_port)
        try:
            for port in ports:
                sock = open_dhcp_socket(self.interface, port)
                transport, _ = await loop.create_datagram_endpoint(
                    functools.partial(_Endpoint, self, port), sock=sock)
                self._transports[port] = transport
            log.info("dhcp.listen interface=%s ports=%s mode=%s", self.interface,
                     ",".join(map(str, ports)), self.network.mode.value)
            while True:
                await self._serve_batch()
        finally:
            self.close()

    def close(self) -> None:
        for transport in self._transports.values():
            transport.close()
        self._transports.clear()

    def _enqueue(self, data: bytes, addr: tuple[str | object, int], port: int) -> None:
        try:
            peer = (IPv4Address(str(addr[0])), int(addr[1]))
            self._queue.put_nowait(_Datagram(data, peer, port, self.clock()))
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("dhcp.overload dropped=%d", self.dropped)

    async def _serve_batch(self) -> None:
        batch = [await self._queue.get()]
        while len(batch) < _BATCH_LIMIT and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        decided: list[tuple[_Datagram, Decision, int | None]] = []
        for datagram in batch:
            try:
                decision, max_size = self._decide(datagram)
            except Exception as exc:  # the per-datagram guard: log, drop, keep serving
                self._log_drop(datagram, exc)
                continue
            decided.append((datagram, decision, max_size))
        if self.leases.dirty:
            try:
                if self.leases.synchronous == "FULL":  # an fsync: keep it off the loop
                    await asyncio.to_thread(self.leases.commit)
                else:  # a WAL append without fsync: cheaper than a thread hop
                    self.leases.commit()
            except sqlite3.Error as exc:
                log.error("dhcp.lease_commit_failed error=%s replies_dropped=%d", exc,
                          len(decided))
                self.leases.rollback()
                return
        for datagram, decision, max_size in decided:
            try:
                self._send(datagram, decision, max_size)
            except Exception as exc:  # the same guard, for the sending half
                self._log_drop(datagram, exc)

    @staticmethod
    def _log_drop(datagram: _Datagram, exc: Exception) -> None:
        log.warning("dhcp.drop peer=%s:%d error=%s: %s", datagram.peer[0], datagram.peer[1],
                    type(exc).__name__, exc)

    def _decide(self, datagram: _Datagram) -> tuple[Decision, int | None]:
        request = parse_packet(datagram.data)
        decision = respond(request, now=datagram.received, config=self.network,
                           lookup=self.lookup, leases=self.leases, port=datagram.port,
                           source=datagram.peer, is_reserved=self.is_reserved)
        if decision.lease_change is not None:
            self.leases.stage(decision.lease_change)
        if decision.unknown_client is not None:
            self.leases.record_unknown(decision.unknown_client, datagram.received)
        if decision.reply is None:
            log.debug("dhcp.ignore mac=%s reason=%s", request.chaddr[:6].hex(":"),
                      decision.reason)
        try:
            max_size = request.max_message_size
        except MalformedPacket:
            max_size = None
        return decision, max_size

    def _send(self, datagram: _Datagram, decision: Decision, max_size: int | None) -> None:
        reply, destination, event = decision.reply, decision.destination, decision.event
        if reply is None or destination is None:
            return
        transport = self._transports.get(datagram.port)
        if transport is None:
            return
        transport.sendto(reply.to_bytes(max_size=max_size),
                         (str(destination.address), destination.port))
        if event is None:
            return
        log.info("%s mac=%s ip=%s node=%s file=%s", event.kind, event.mac, event.address,
                 event.node or "-", event.file or "-")
        self.on_event(BootEvent(time=datagram.received, kind=event.kind, node=event.node,
                                mac=str(event.mac), peer=event.address, file=event.file))
