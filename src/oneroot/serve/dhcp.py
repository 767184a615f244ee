"""The DHCP service: UDP sockets on one interface around the sans-IO responder.

Each time a socket is readable it is drained (up to `_BATCH_LIMIT` datagrams) in one loop
callback, without a queue or a task switch: each datagram is decided and its reply encoded; the
lease changes of the batch are then written in one transaction (group commit) and only after
that are the replies that carry them sent, so no ACK leaves before its lease is written.
Replies whose decision writes nothing (an OFFER of a free address, a NAK) are sent at once.
An unknown client's record holds no reply: it goes with the next lease write, or after
`_LAZY_FLUSH` seconds.

DHCPDECLINE deletes a lease, so it is taken only from its holder: a direct one is read from a
packet socket (`dhcp_link`), which tells the frame's Ethernet source, and a relayed one from
the UDP socket (the responder checks the relay's option 82). A lease write that fails (a full
disk) is logged as an error and counted in `health`; the ACKs of inventory nodes, whose
addresses are fixed, still go out, while pool clients' ACKs wait for a write that succeeds.
Unknown clients and quarantined addresses are pruned every `limits.prune_interval`.

On a shared database (other servers bind leases this view never saw), a pool client's REQUEST
the view cannot answer (a renewal after its server died), and a RELEASE or DECLINE of a lease
it lacks, waits for its rows, read in a worker thread (a batch per read), and is decided again;
a client the view knows costs no read.

At synchronous=NORMAL the write (a WAL append: the lease reaches the OS before its ACK, as
Kea's memfile does) runs inline. At synchronous=FULL it fsyncs, so it runs in a worker thread;
batches that arrive meanwhile are decided and staged, and their changes go together in the next
write (pipelined group commit). WAL checkpoints, which fsync at either level, run in a worker
thread too. (Writing and sending in a thread at NORMAL too, to overlap the kernel's delivery of
each broadcast with the loop's deciding, was measured slower on a loaded 2-CPU machine: the GIL
hand-offs cost more than the overlap gained; see docs/notes.)
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from ipaddress import IPv4Address

from oneroot.errors import MalformedPacket
from oneroot.inventory.leases import LeaseStore, LostClaim
from oneroot.model.events import BootEvent
from oneroot.model.limits import DEFAULT_LIMITS, Limits
from oneroot.net import MacAddress
from oneroot.proto.dhcp import (
    DhcpMode,
    DhcpPacket,
    Lease,
    LeaseAction,
    LeaseState,
    MessageType,
    NetworkConfig,
    NodeBoot,
    claim_lost_nak,
    named_as,
    parse_packet,
    respond,
)
from oneroot.serve.dhcp_link import may_be_decline, open_link_socket, parse_link_datagram
from oneroot.serve.dhcp_records import AddressTexts as _AddressTexts
from oneroot.serve.dhcp_records import DhcpHealth as DhcpHealth
from oneroot.serve.dhcp_records import Refusals as _Refusals
from oneroot.serve.dhcp_records import Reply as _Reply
from oneroot.serve.dhcp_records import Reread as _Reread
from oneroot.serve.dhcp_sockets import PeerIdentities, open_alias_socket, open_dhcp_socket

log = logging.getLogger(__name__)

_BATCH_LIMIT = 256  # datagrams read per readiness callback
_HELD_LIMIT = 4096  # replies waiting for a write; beyond that reading pauses (the kernel queues)
_BACKLOG_LIMIT = 4096  # replies waiting for socket buffer space; beyond that they are dropped
_CHECKPOINT_EVERY = 256  # commits between WAL checkpoints
_LAZY_FLUSH = 1.0  # seconds a record no reply waits for may wait for the next write
_MAX_DATAGRAM = 65536
_NO_RELAY = IPv4Address(0)
_REREAD_BATCH = 64  # clients' rows read per worker hop


class DhcpService:
    """DHCP (and, in proxy mode, PXE port 4011) on `interface`, until cancelled."""

    def __init__(self, *, interface: str, server_address: IPv4Address, network: NetworkConfig,
                 lookup: Callable[[MacAddress], NodeBoot | None], leases: LeaseStore,
                 on_event: Callable[[BootEvent], None], port: int = 67, proxy_port: int = 4011,
                 is_reserved: Callable[[IPv4Address], bool] | None = None,
                 clock: Callable[[], float] = time.time, limits: Limits = DEFAULT_LIMITS,
                 on_health: Callable[[DhcpHealth], None] | None = None,
                 relays: frozenset[IPv4Address] | None = None,
                 pool_events: bool = True) -> None:
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
        self.limits = limits
        self.health = DhcpHealth()
        self.on_health = on_health
        # The relays (giaddr) whose segments this server serves; None: every relay's.
        self.relays = relays
        # False: a reply to a client no node owns (no node, not a node's address) is logged
        # but not made a BootEvent (serve's recorder keeps none: serve/events.py; building
        # one per OFFER and ACK of a storm's pool clients cost ~10% of the CPU per exchange)
        self.pool_events = pool_events
        self.pool_refused = 0
        self.unserved_relays = _Refusals(
            "dhcp.relay_unserved", "the relay's segment has no pool here (setting relay_pools) "
            "and is outside the subnet: nothing offered")
        self.unserved_nodes = _Refusals(
            "dhcp.node_off_segment", "relayed from a segment outside the subnet, where the "
            "node's fixed address cannot work: nothing offered (move the node's address, or "
            "check the relay)")
        self.dropped = 0
        self.rereads = 0  # clients' rows read from the shared database
        self.rereads_dropped = 0
        self._rereads: list[_Reread] = []
        self._rereading: asyncio.Future[list[Lease]] | None = None
        self._link: socket.socket | None = None  # AF_PACKET: direct DECLINEs
        # peers' service addresses held here (`ha_servers`): datagrams sent to them
        self._aliases: dict[IPv4Address, socket.socket] = {}
        self.identities = PeerIdentities()
        self._next_prune = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sockets: dict[int, socket.socket] = {}
        self._reading = False
        self._held: list[_Reply] = []  # replies whose lease changes are not written yet
        self._writing: asyncio.Future[list[LostClaim]] | None = None  # a worker's write
        self._flush_timer: asyncio.TimerHandle | None = None
        self._checkpointing: asyncio.Future[None] | None = None
        self._commits = 0
        self._backlog: dict[int, deque[tuple[bytes, tuple[str, int]]]] = {}
        self._addresses = _AddressTexts()  # the peers' addresses, and replies' in text

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        ports = [self.port]
        if self.network.mode is DhcpMode.PROXY:
            ports.append(self.proxy_port)
        self.leases.defer_checkpoints()
        try:
            for port in ports:
                self._sockets[port] = open_dhcp_socket(self.interface, port)
            self._open_aliases()
            self._open_link()
            self._resume_reading()
            log.info("dhcp.listen interface=%s ports=%s mode=%s", self.interface,
                     ",".join(map(str, ports)), self.network.mode.value)
            await loop.create_future()  # serve from the reader callbacks until cancelled
        finally:
            self.close()
            for job in (self._writing, self._checkpointing, self._rereading):
                if job is not None:  # let the worker thread finish with the database
                    await asyncio.wait([job])

    def close(self) -> None:
        self._pause_reading()
        if self._flush_timer is not None:
            self._flush_timer.cancel()  # the store's close() writes what is staged
            self._flush_timer = None
        if self._link is not None:
            self._link.close()
            self._link = None
        for port, sock in self._sockets.items():
            if port in self._backlog and self._loop is not None:
                self._loop.remove_writer(sock.fileno())
            sock.close()
        self._sockets.clear()
        for sock in self._aliases.values():
            sock.close()
        self._aliases.clear()
        self._backlog.clear()

    # --- receiving ---

    def _resume_reading(self) -> None:
        if self._reading or self._loop is None:
            return
        for port, sock in self._sockets.items():
            self._loop.add_reader(sock.fileno(), self._readable, sock, port)
        for alias, sock in self._aliases.items():
            self._loop.add_reader(sock.fileno(), self._readable, sock, self.port, alias)
        if self._link is not None:
            self._loop.add_reader(self._link.fileno(), self._link_readable, self._link)
        self._reading = True

    def _pause_reading(self) -> None:
        if not self._reading or self._loop is None:
            return
        for sock in (*self._sockets.values(), *self._aliases.values()):
            self._loop.remove_reader(sock.fileno())
        if self._link is not None:
            self._loop.remove_reader(self._link.fileno())
        self._reading = False

    def _open_aliases(self) -> None:
        for peer in self.network.peers:
            try:
                self._aliases[peer] = open_alias_socket(self.interface, peer, self.port)
            except OSError as exc:  # its clients' unicasts are then answered as this server
                log.warning("dhcp.alias_disabled address=%s error=%s", peer, exc)

    def _open_link(self) -> None:
        if self.network.mode is DhcpMode.PROXY:
            return  # a proxy holds no leases: DECLINE is not its business
        try:
            self._link = open_link_socket(self.interface, self.port)
        except OSError as exc:
            log.warning("dhcp.decline_disabled reason=no packet socket on %s: %s",
                        self.interface, exc)
            return
        self.health.decline_from_link = True

    def _link_readable(self, sock: socket.socket) -> None:
        """Direct DECLINEs, with the Ethernet source of their frames."""
        now = self.clock()
        for _ in range(_BATCH_LIMIT):
            try:
                frame, address = sock.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.warning("dhcp.link_error error=%s", exc)
                break
            datagram = parse_link_datagram(frame, address, self.port)
            if datagram is None or not may_be_decline(datagram.payload):
                continue
            try:
                self._decide(datagram.payload, datagram.source, self.port, now,
                             frame_source=datagram.frame_source)
            except Exception as exc:  # the per-datagram guard
                self._log_drop(datagram.source, exc)
        if self.leases.dirty:
            self._commit(flush=True)

    def _readable(self, sock: socket.socket, port: int, alias: IPv4Address | None = None
                  ) -> None:
        batch: list[tuple[bytes, tuple[str, int]]] = []
        try:
            while len(batch) < _BATCH_LIMIT:
                batch.append(sock.recvfrom(_MAX_DATAGRAM))
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            log.warning("dhcp.socket_error port=%d error=%s", port, exc)
        if batch:
            self._serve(batch, port, alias)

    def _serve(self, batch: list[tuple[bytes, tuple[str, int]]], port: int,
               alias: IPv4Address | None = None) -> None:
        now = self.clock()
        held = self._held
        for data, addr in batch:
            try:
                reply, holds = self._decide(data, addr, port, now, alias=alias)
            except Exception as exc:  # the per-datagram guard: log, drop, keep serving
                self._log_drop(addr, exc)
                continue
            if reply is None:
                continue
            if holds:
                held.append(reply)
            else:
                self._send(reply)
        if now >= self._next_prune:
            self._next_prune = now + self.limits.prune_interval
            limits = self.limits
            self.leases.prune(now, unknown_kept=limits.unknown_clients_kept,
                              unknown_max_age=limits.unknown_clients_max_age,
                              declined_kept=limits.declined_kept)
        self._commit_or_flush_later()

    def _commit_or_flush_later(self) -> None:
        """Write now what replies wait for; what none waits for (unknown clients seen) goes
        with the next write, or after `_LAZY_FLUSH` seconds."""
        if self._held or self.leases.leases_dirty:
            self._commit()
        if self.leases.dirty and self._flush_timer is None and self._loop is not None \
                and self._sockets:
            self._flush_timer = self._loop.call_later(_LAZY_FLUSH, self._flush_lazy)

    def _flush_lazy(self) -> None:
        self._flush_timer = None
        if self.leases.dirty:
            self._commit(flush=True)
            if self._writing is not None:  # busy: come back after that write
                self._commit_or_flush_later()

    def _decide(self, data: bytes, addr: tuple[str, int], port: int, now: float,
                frame_source: MacAddress | None = None, *, reread: bool = True,
                alias: IPv4Address | None = None) -> tuple[_Reply | None, bool]:
        """The encoded reply to one datagram, and whether it waits for a write. `reread`:
        a REQUEST the view cannot answer is set aside for a read of the shared database.
        `alias`: it was sent to that peer's service address (held here); one that names a
        peer's identifier held here is answered as that peer too."""
        request = parse_packet(data)
        decline = request.message_type is MessageType.DECLINE
        if (decline and (frame_source is None) == (request.giaddr == _NO_RELAY)) or \
                (frame_source is not None and not decline):
            return None, False  # direct DECLINEs come from the link socket, all else not
        if self.relays is not None and request.giaddr != _NO_RELAY and \
                request.giaddr not in self.relays:
            return None, False  # another server's segment
        network = self.network
        if network.peers:
            alias = alias or self.identities.named(network, request.server_id, now)
            if alias is not None:
                network = self.identities.config(network, alias)
        decision = respond(request, now=now, config=network, lookup=self.lookup,
                           leases=self.leases, port=port, source=self._addresses.peer(addr),
                           is_reserved=self.is_reserved, frame_source=frame_source,
                           view_complete=not (reread and self.leases.remote))
        if decision.reread is not None:
            self._queue_reread(_Reread(data, addr, port, request.mac, decision.reread,
                                       frame_source, alias))
            return None, False
        if decline:
            log.warning("dhcp.decline mac=%s frame_source=%s result=%s", request.mac,
                        frame_source or "-", decision.reason)
        holds = False
        if decision.unknown_client is not None:  # written with the next group: no reply waits
            self.leases.record_unknown(decision.unknown_client, now,
                                       vendor_class_text=self.limits.vendor_class_text)
        claim: DhcpPacket | None = None
        change = decision.lease_change
        if change is not None:
            if change.node is None and change.action is LeaseAction.BIND:
                if self.health.failing:  # no new pool lease without the database
                    self._refuse_pool(request.mac)
                    return None, holds
                if change.state is LeaseState.BOUND:
                    claim = request
            # A reply waits for its change's write; an offer of a free address changes only
            # the view (offers are not written): sent at once, so the client's REQUEST comes
            # while the rest of the batch is decided, not after its group commit
            holds = self.leases.stage(change, now=now)
        reply, destination = decision.reply, decision.destination
        if reply is None or destination is None:
            if decision.unserved_node is not None:
                self.unserved_nodes.add(now, relay=decision.unserved_relay, mac=request.mac,
                                        node=decision.unserved_node)
            elif decision.unserved_relay is not None:
                self.unserved_relays.add(now, relay=decision.unserved_relay, mac=request.mac)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("dhcp.ignore mac=%s reason=%s", request.chaddr[:6].hex(":"),
                          decision.reason)
            return None, holds
        address = (self._addresses.text(destination.address), destination.port)
        if network.peers and decision.event is not None and decision.event.kind == "dhcp.nak":
            self._nak_as_held_peers(request, reply, address, port, now)
        try:
            max_size = request.max_message_size
        except MalformedPacket:
            max_size = None
        return _Reply(reply.to_bytes(max_size=max_size), address, port, decision.event, now,
                      claim, alias), holds

    # --- renewals of leases another server bound: read from the database, decided again ---

    def _queue_reread(self, waiting: _Reread) -> None:
        if len(self._rereads) >= self.limits.lease_rereads_pending:
            self.rereads_dropped += 1
            if self.rereads_dropped % 100 == 1:
                log.warning("dhcp.reread_dropped mac=%s count=%d reason=%d renewals wait for "
                            "the lease database", waiting.mac, self.rereads_dropped,
                            len(self._rereads))
            return
        self._rereads.append(waiting)
        self._start_reread()

    def _start_reread(self) -> None:
        if self._rereading is not None or not self._rereads or self._loop is None:
            return
        batch, self._rereads = self._rereads[:_REREAD_BATCH], self._rereads[_REREAD_BATCH:]
        self.rereads += len(batch)
        reading = self._loop.run_in_executor(None, self.leases.read_leases,
                                             [(r.mac, r.wanted) for r in batch])
        self._rereading = reading
        reading.add_done_callback(lambda done: self._reread(done, batch))

    def _reread(self, done: asyncio.Future[list[Lease]], batch: list[_Reread]) -> None:
        """Decide again the REQUESTs whose clients' rows were read (none: the clients ask
        again, as after a lost datagram)."""
        self._rereading = None
        if not self._sockets:  # closed meanwhile
            return
        exc = BaseException("read cancelled") if done.cancelled() else done.exception()
        now = self.clock()
        if exc is not None:
            log.warning("dhcp.reread_failed clients=%d error=%s: %s", len(batch),
                        type(exc).__name__, exc)
        else:
            self.leases.learn(done.result(), now)
            for waiting in batch:
                try:
                    reply, holds = self._decide(waiting.data, waiting.address, waiting.port,
                                                now, waiting.frame_source, reread=False,
                                                alias=waiting.alias)
                except Exception as error:  # the per-datagram guard
                    self._log_drop(waiting.address, error)
                    continue
                if reply is not None:
                    (self._held.append if holds else self._send)(reply)
            self._commit_or_flush_later()
        self._start_reread()

    def _refuse_pool(self, mac: MacAddress) -> None:
        self.pool_refused += 1
        if self.pool_refused % 100 == 1:
            log.warning("dhcp.pool_refused mac=%s count=%d reason=the lease database is "
                        "unreachable (%s)", mac, self.pool_refused, self.health.last_error)

    # --- writing the leases, then sending what waited for them ---

    def _commit(self, *, flush: bool = False) -> None:
        """Write the staged changes, then send the held replies. One write at a time: while a
        worker thread writes, new changes wait and go together in the next write. Records no
        reply waits for are written only along with lease changes, or on `flush`."""
        if self._writing is not None:
            if len(self._held) >= _HELD_LIMIT:
                self._pause_reading()
            return
        replies, self._held = self._held, []
        if not (self.leases.leases_dirty or (flush and self.leases.dirty)):
            self._send_all(replies)  # only in-memory changes (offers): nothing to wait for
            return
        statements = self.leases.take_pending()
        if self.leases.synchronous == "FULL" or self.leases.remote:  # an fsync, a round trip:
            # keep it off the loop
            assert self._loop is not None
            writing = self._loop.run_in_executor(None, self.leases.write, statements)
            self._writing = writing
            writing.add_done_callback(lambda done: self._written(done, replies))
            return
        try:  # a WAL append without fsync: cheaper than a thread hop
            lost = self.leases.write(statements)
        except Exception as exc:
            self._write_failed(exc, replies)
            return
        self._committed(replies, lost)

    def _written(self, done: asyncio.Future[list[LostClaim]], replies: list[_Reply]) -> None:
        self._writing = None
        if not self._sockets:  # closed meanwhile
            return
        exc = BaseException("write cancelled") if done.cancelled() else done.exception()
        if exc is not None:
            self._write_failed(exc, replies)
        else:
            self._committed(replies, done.result())
        self._resume_reading()
        self._commit_or_flush_later()

    def _committed(self, replies: list[_Reply], lost: list[LostClaim]) -> None:
        if lost:  # another server bound those addresses first: NAK, the client starts over
            self.leases.settle(lost)
            taken = {(claim.mac, claim.address) for claim in lost}
            replies = [self._nak_lost(r) if r.claim is not None and r.event is not None
                       and (r.event.mac, r.event.address) in taken else r for r in replies]
        self._send_all(replies)
        health = self.health
        recovered = health.failing
        health.last_commit = self.clock()
        if recovered:
            log.warning("dhcp.lease_commit_recovered failures=%d", health.commit_failures)
            self._report_health()
        self._commits += 1
        if self._commits % _CHECKPOINT_EVERY == 0 and self._checkpointing is None \
                and self._loop is not None:
            checkpointing = self._loop.run_in_executor(None, self.leases.checkpoint)
            self._checkpointing = checkpointing
            checkpointing.add_done_callback(self._checkpointed)

    def _nak_lost(self, reply: _Reply) -> _Reply:
        assert reply.claim is not None and reply.event is not None
        log.info("dhcp.claim_lost mac=%s ip=%s", reply.event.mac, reply.event.address)
        network = self.network if reply.alias is None else \
            self.identities.config(self.network, reply.alias)
        decision = claim_lost_nak(reply.claim, config=network,
                                  reason=f"{reply.event.address} is bound to another client")
        assert decision.reply is not None and decision.destination is not None
        address = (str(decision.destination.address), decision.destination.port)
        if network.peers:
            self._nak_as_held_peers(reply.claim, decision.reply, address, reply.port,
                                    reply.received)
        return _Reply(decision.reply.to_bytes(), address, reply.port, decision.event,
                      reply.received)

    def _nak_as_held_peers(self, request: DhcpPacket, nak: DhcpPacket,
                           address: tuple[str, int], port: int, now: float) -> None:
        """A NAK to a REQUEST that names no server (REBINDING, INIT-REBOOT) goes under each
        peer identifier held here too (the responder's table)."""
        if request.server_id is None:
            for peer in self.identities.held(self.network, now):
                self._send(_Reply(named_as(nak, peer).to_bytes(), address, port, None, now))

    def _checkpointed(self, done: asyncio.Future[None]) -> None:
        self._checkpointing = None
        if not done.cancelled() and done.exception() is not None:
            log.warning("dhcp.checkpoint_failed error=%s", done.exception())

    def _write_failed(self, exc: BaseException, replies: list[_Reply]) -> None:
        # Changes staged after the failed ones were decided on top of them: drop them too,
        # except the answers to inventory nodes, whose addresses no lease row decides.
        waiting, self._held = replies + self._held, []
        kept = [r for r in waiting if r.event is not None and r.event.node is not None]
        dropped = len(waiting) - len(kept)
        health = self.health
        health.commit_failures += 1
        health.replies_dropped += dropped
        health.last_error = f"{type(exc).__name__}: {exc}"
        health.last_failure = self.clock()
        log.error("dhcp.lease_commit_failed error=%s replies_dropped=%d replies_sent=%d "
                  "failures=%d", health.last_error, dropped, len(kept), health.commit_failures)
        self.leases.rollback()
        self._send_all(kept)
        self._report_health()

    def _report_health(self) -> None:
        if self.on_health is not None:
            try:
                self.on_health(self.health)
            except Exception:  # reporting must not stop serving
                log.exception("dhcp.health_report_failed")

    # --- sending ---

    def _send_all(self, replies: list[_Reply]) -> None:
        for reply in replies:
            self._send(reply)

    def _send(self, reply: _Reply) -> None:
        sock = self._sockets.get(reply.port)
        if sock is None:
            return
        try:
            backlog = self._backlog.get(reply.port)
            if backlog is not None:
                if len(backlog) >= _BACKLOG_LIMIT:
                    self.dropped += 1
                    log.warning("dhcp.overload dropped=%d", self.dropped)
                    return
                backlog.append((reply.data, reply.address))
            else:
                try:
                    sock.sendto(reply.data, reply.address)
                except (BlockingIOError, InterruptedError):  # the socket buffer is full
                    assert self._loop is not None
                    self._backlog[reply.port] = deque([(reply.data, reply.address)])
                    self._loop.add_writer(sock.fileno(), self._writable, sock, reply.port)
            event = reply.event
            if event is None:
                return
            mac = event.mac.packed.hex(":")
            address = event.address
            log.info("%s mac=%s ip=%s node=%s file=%s", event.kind, mac,
                     "None" if address is None else self._addresses.text(address),
                     event.node or "-", event.file or "-")
            if event.node is None and not self.pool_events and not (
                    address is not None and self.is_reserved is not None
                    and self.is_reserved(address)):
                return
            self.on_event(BootEvent(time=reply.received, kind=event.kind, node=event.node,
                                    mac=mac, peer=event.address, file=event.file))
        except Exception as exc:  # the per-datagram guard, for the sending half
            self._log_drop(reply.address, exc)

    def _writable(self, sock: socket.socket, port: int) -> None:
        backlog = self._backlog[port]
        while backlog:
            data, address = backlog[0]
            try:
                sock.sendto(data, address)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._log_drop(address, exc)
            backlog.popleft()
        assert self._loop is not None
        self._loop.remove_writer(sock.fileno())
        del self._backlog[port]

    @staticmethod
    def _log_drop(peer: tuple[str, int], exc: Exception) -> None:
        log.warning("dhcp.drop peer=%s:%d error=%s: %s", peer[0], peer[1],
                    type(exc).__name__, exc)
