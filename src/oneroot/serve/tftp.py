"""The TFTP service: sockets, timers, files and events around `oneroot.proto.tftp`.

One UDP socket (port 69) takes read requests; each accepted transfer gets its own UDP endpoint
on an ephemeral port (its TID, RFC 1350), connected to the client. A windowed transfer runs on
the loop, its retransmit timer via `loop.call_at`; a lock-step one (windowsize 1, as PXE ROMs ask)
runs on the loop too, on its own socket (serve/tftp_lockstep.py), or, while the service has no
more than `lockstep_threads` transfers, in a thread of its own that hands its outcome back to the
loop. Never a process per transfer. Files come from
`virtual(name)` first (per-node rendered files), then from under `root`, never from outside it
(serve/tftp_paths.py has the file-name rules).

A PXE ROM (Intel's, pxelinux) asks for `tsize`, reads the OACK and sends ERROR 0 "TFTP Aborted"
before any data, at every boot, to learn the file's size: that is a size probe (`Failed.
size_probe`), counted in `stats.probes` and logged at INFO, not a failed transfer.

Write requests are refused with ERROR 2.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from ipaddress import IPv4Address
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeAlias, cast

from oneroot.errors import MalformedPacket
from oneroot.model.events import BootEvent
from oneroot.proto.tftp import (
    BytesSource,
    Error,
    ErrorCode,
    Failed,
    FileSource,
    Finished,
    ReadRequest,
    ReadTransfer,
    SendDatagram,
    SetTimer,
    TransferConfig,
    TransferStats,
    WriteRequest,
    blksize_for_mtu,
    parse_packet,
)
from oneroot.serve.tftp_lockstep import LockstepSession, LoopLockstepSession
from oneroot.serve.tftp_paths import (
    MAX_NAME_BYTES,
    PathRefused,
    normalize_tftp_name,
    open_tftp_file,
    resolve_tftp_path,
)

__all__ = [
    "MAX_NAME_BYTES",
    "PathRefused",
    "TftpService",
    "TftpServiceStats",
    "blksize_for_interface",
    "interface_mtu",
    "normalize_tftp_name",
    "open_tftp_file",
    "resolve_tftp_path",
]

log = logging.getLogger(__name__)

_AnySession: TypeAlias = "_Session | LockstepSession | LoopLockstepSession"

FALLBACK_BLKSIZE = 1468  # a 1500-byte Ethernet MTU, when the interface's own is unknown
_SUPPORTED_MODES = ("octet", "netascii")


def interface_mtu(interface: str, *, sys_net: Path = Path("/sys/class/net")) -> int | None:
    """The MTU of `interface` in this network namespace, or None if it has none we can read."""
    try:
        return int((sys_net / interface / "mtu").read_text())
    except (OSError, ValueError):
        return None


def blksize_for_interface(interface: str) -> int:
    """The largest blksize that `interface`'s MTU carries unfragmented (1468 if unknown)."""
    mtu = interface_mtu(interface)
    if mtu is None:
        log.warning("tftp.mtu_unknown interface=%s blksize=%d", interface, FALLBACK_BLKSIZE)
        return FALLBACK_BLKSIZE
    return blksize_for_mtu(mtu)


@dataclass(slots=True)
class TftpServiceStats:
    """Counters since start; read by tests, the bench and `oneroot status`."""

    requests: int = 0  # datagrams on the main socket that parsed as RRQ/WRQ
    transfers: int = 0  # transfers started
    active: int = 0
    completed: int = 0
    failed: int = 0  # started transfers that ended in an error
    probes: int = 0  # size probes: tsize read from the OACK, then the client's ERROR (not failed)
    refused: int = 0  # requests answered with an ERROR at once (path, mode, WRQ)
    busy: int = 0  # RRQs past max_sessions (left unanswered) or max_sessions_per_client
    errors: int = 0  # tftp.error events (failed + refused + per-client busy)
    retransmits: int = 0
    duplicate_acks: int = 0
    bytes: int = 0
    bad_datagrams: int = 0  # dropped by the per-datagram guard or undecodable on port 69


class TftpService:
    """Serve read requests for files under `root` and from `virtual`.

        service = TftpService(bind=IPv4Address("10.0.0.1"), root=Path("/srv/tftp"),
                              virtual=render_for_node, on_event=events.append)
        await service.start()      # binds; `service.port` is the real port (port=0 picks one)
        await service.run()        # until close()
    """

    def __init__(
        self,
        *,
        bind: IPv4Address | str,
        port: int = 69,
        root: Path,
        virtual: Callable[[str], bytes | None] = lambda name: None,
        on_event: Callable[[BootEvent], None] = lambda event: None,
        max_sessions: int = 256,
        max_sessions_per_client: int = 8,
        max_blksize: int = FALLBACK_BLKSIZE,
        max_windowsize: int = 64,
        max_window_bytes: int = 1 << 16,
        timeout: float = 1.0,
        max_retries: int = 5,
        max_interval: float = 8.0,
        max_option_timeout: int = 5,
        lockstep_threads: int = 4,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bind = IPv4Address(bind)
        self._port = port
        self.root = Path(root)
        self._virtual = virtual
        self._on_event = on_event
        self.max_sessions = max_sessions
        self.max_sessions_per_client = max_sessions_per_client
        self.config = TransferConfig(
            max_blksize=max_blksize,
            max_windowsize=max_windowsize,
            max_window_bytes=max_window_bytes,
            timeout=timeout,
            max_retries=max_retries,
            max_interval=max_interval,
            max_option_timeout=max_option_timeout,
        )
        self._clock = clock
        # lock-step transfers get a thread while there are at most this many transfers
        self.lockstep_threads = lockstep_threads
        self._lockstep: set[LockstepSession] = set()
        self.stats = TftpServiceStats()
        self._busy_logged = -10.0  # tftp.busy is logged at most every 10 s
        self._transport: asyncio.DatagramTransport | None = None
        # None: endpoint coming up
        self._sessions: dict[tuple[str, int], _AnySession | None] = {}
        self._per_client: dict[str, int] = {}  # sessions per client IP (its ports vary)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _RequestProtocol(self), local_addr=(str(self.bind), self._port)
        )
        self._transport = transport
        self._port = transport.get_extra_info("sockname")[1]
        log.info("tftp.start bind=%s port=%d root=%s max_blksize=%d", self.bind, self._port,
                 self.root, self.config.max_blksize)

    async def run(self) -> None:
        if self._transport is None:
            await self.start()
        await self._closed.wait()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        for task in self._tasks:
            task.cancel()
        for session in list(self._sessions.values()):
            if session is not None:
                session.abort()
        self._sessions.clear()
        self._per_client.clear()
        self._closed.set()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def port(self) -> int:
        return self._port

    @property
    def max_blksize(self) -> int:
        return self.config.max_blksize

    @max_blksize.setter
    def max_blksize(self, value: int) -> None:
        """Offered to transfers that start from now on (the serving interface's MTU changed)."""
        if value != self.config.max_blksize:
            log.info("tftp.max_blksize old=%d new=%d", self.config.max_blksize, value)
            self.config = replace(self.config, max_blksize=value)

    # -- requests on the main socket ---------------------------------------------------------

    def _request_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            packet = parse_packet(data)
        except MalformedPacket as exc:
            self.stats.bad_datagrams += 1
            log.info("tftp.bad_request peer=%s:%d reason=%s", addr[0], addr[1], exc)
            if data[:2] in (b"\x00\x01", b"\x00\x02"):
                # A request we cannot read (a NUL inside the name splits it into more strings):
                # say so. Never answer other junk on port 69, which could start an error loop.
                self._refuse(addr, "", ErrorCode.ILLEGAL_OPERATION, "malformed request")
            return
        match packet:
            case WriteRequest(filename=name):
                self.stats.requests += 1
                self._refuse(addr, name, ErrorCode.ACCESS_VIOLATION, "write requests refused")
            case ReadRequest():
                self.stats.requests += 1
                self._read_request(packet, addr)
            case _:
                # DATA/ACK/ERROR/OACK to port 69 belong to no transfer; answering could loop.
                self.stats.bad_datagrams += 1
                log.debug("tftp.stray peer=%s:%d packet=%s", addr[0], addr[1],
                          type(packet).__name__)

    def _read_request(self, request: ReadRequest, addr: tuple[str, int]) -> None:
        if addr in self._sessions:
            return  # the client resent its RRQ; that transfer's own retransmits answer it
        if len(self._sessions) >= self.max_sessions:
            self._busy(addr)
            return
        if self._per_client.get(addr[0], 0) >= self.max_sessions_per_client:
            self.stats.busy += 1
            self._refuse(addr, request.filename, ErrorCode.NOT_DEFINED,
                         "too many transfers from this address")
            return
        if request.mode.lower() not in _SUPPORTED_MODES:
            self._refuse(addr, request.filename, ErrorCode.ILLEGAL_OPERATION,
                         f"transfer mode {request.mode!r} not supported")
            return
        try:
            name = normalize_tftp_name(request.filename)
            content = self._virtual(name)
            source: FileSource = (
                BytesSource(content) if content is not None else open_tftp_file(self.root, name)
            )
        except PathRefused as exc:
            self._refuse(addr, request.filename, exc.code, exc.message)
            return
        self._open(addr)
        task = asyncio.get_running_loop().create_task(
            self._start_transfer(source, request, name, addr)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start_transfer(
        self, source: FileSource, request: ReadRequest, name: str, addr: tuple[str, int]
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            transfer = ReadTransfer(source, request, self.config, now=loop.time())
            if transfer.stats.windowsize == 1:
                self._start_lockstep(transfer, name, addr)
                return
            session = _Session(self, transfer, name, addr)
            await loop.create_datagram_endpoint(
                lambda: session, local_addr=(str(self.bind), 0), remote_addr=addr
            )
        except BaseException:
            source.close()
            if addr in self._sessions:
                self._close(addr)
            raise
        self._sessions[addr] = session
        self.stats.transfers += 1
        self.stats.active += 1
        session.drain()

    def _start_lockstep(self, transfer: ReadTransfer, name: str, addr: tuple[str, int]) -> None:
        def outcome(session: LockstepSession, result: Finished | Failed) -> None:
            if isinstance(result, Finished):
                self._transfer_done(session, result.stats)
            else:
                self._failed(session, result)

        def bad_datagram() -> None:
            self.stats.bad_datagrams += 1

        # A thread only while the service has few transfers: past that, a thread per transfer
        # makes every block wait for the GIL between threads and the loop (bench/storm).
        threaded = len(self._sessions) <= self.lockstep_threads
        runner = LockstepSession if threaded else LoopLockstepSession
        session = runner(transfer, name, addr, bind=self.bind, on_outcome=outcome,
                         on_ended=self._session_ended, on_bad_datagram=bad_datagram)
        self._sessions[addr] = session
        if isinstance(session, LockstepSession):
            self._lockstep.add(session)
        self.stats.transfers += 1
        self.stats.active += 1
        session.start()

    def _busy(self, addr: tuple[str, int]) -> None:
        """Every session taken: no answer (as dnsmasq), so the client resends its RRQ later; an
        ERROR would end a PXE ROM's boot (bench/storm). docs/security.md."""
        self.stats.busy += 1
        if (now := time.monotonic()) - self._busy_logged >= 10.0:
            self._busy_logged = now
            log.warning("tftp.busy sessions=%d peer=%s:%d dropped=%d (the client retries)",
                        len(self._sessions), addr[0], addr[1], self.stats.busy)

    def _refuse(self, addr: tuple[str, int], name: str, code: ErrorCode, message: str) -> None:
        self.stats.refused += 1
        if self._transport is not None:
            self._transport.sendto(Error(code=code, message=message).to_bytes(), addr)
        self._emit_error(addr, name, int(code), message, None)

    # -- session outcomes -------------------------------------------------------------------

    def _session_ended(self, session: _AnySession) -> None:
        self._lockstep.discard(session)
        if self._sessions.get(session.peer) is session:
            self._close(session.peer)
        self.stats.active -= 1

    def _open(self, addr: tuple[str, int]) -> None:
        self._sessions[addr] = None
        self._per_client[addr[0]] = self._per_client.get(addr[0], 0) + 1

    def _close(self, addr: tuple[str, int]) -> None:
        del self._sessions[addr]
        left = self._per_client.pop(addr[0], 1) - 1
        if left > 0:
            self._per_client[addr[0]] = left

    def _transfer_done(self, session: _AnySession, stats: TransferStats) -> None:
        self.stats.completed += 1
        self._count(stats)
        peer = session.peer
        log.info(
            "tftp.done peer=%s:%d file=%s bytes=%d retransmits=%d blksize=%d windowsize=%d "
            "duration=%.3f",
            peer[0], peer[1], session.name, stats.bytes, stats.retransmits, stats.blksize,
            stats.windowsize, stats.duration,
        )
        self._on_event(BootEvent(
            time=self._clock(), kind="tftp.done", peer=IPv4Address(peer[0]), file=session.name,
            bytes=stats.bytes, duration=stats.duration, detail=_detail(stats),
        ))

    def _failed(self, session: _AnySession, result: Failed) -> None:
        if not result.size_probe:
            self._transfer_failed(session, result.error_code, result.message, result.stats)
            return
        self.stats.probes += 1
        self._count(result.stats)
        log.info("tftp.size_probe peer=%s:%d file=%s tsize=%s message=%s", session.peer[0],
                 session.peer[1], session.name, result.stats.tsize, result.message)

    def _transfer_failed(self, session: _AnySession, code: int, message: str,
                         stats: TransferStats) -> None:
        self.stats.failed += 1
        self._count(stats)
        self._emit_error(session.peer, session.name, code, message, stats)

    def _count(self, stats: TransferStats) -> None:
        self.stats.retransmits += stats.retransmits
        self.stats.duplicate_acks += stats.duplicate_acks
        self.stats.bytes += stats.bytes

    def _emit_error(self, peer: tuple[str, int], name: str, code: int, message: str,
                    stats: TransferStats | None) -> None:
        self.stats.errors += 1
        if len(name) > MAX_NAME_BYTES:  # a refused name may be 64 KB: logs fill disks too
            name = name[:MAX_NAME_BYTES] + "…"
        log.warning("tftp.error peer=%s:%d file=%r code=%d message=%s",
                    peer[0], peer[1], name, code, message)
        detail = {"code": str(code), "message": message}
        if stats is not None:
            detail |= _detail(stats)
        self._on_event(BootEvent(
            time=self._clock(), kind="tftp.error", peer=IPv4Address(peer[0]), file=name,
            bytes=stats.bytes if stats else 0, duration=stats.duration if stats else 0.0,
            detail=detail,
        ))


def _detail(stats: TransferStats) -> dict[str, str]:
    detail = {
        "retransmits": str(stats.retransmits),
        "duplicate_acks": str(stats.duplicate_acks),
        "blksize": str(stats.blksize),
        "windowsize": str(stats.windowsize),
        "blocks": str(stats.blocks),
        "options": ",".join(f"{k}={v}" for k, v in stats.options),
    }
    if stats.tsize is not None:
        detail["tsize"] = str(stats.tsize)
    return detail


class _RequestProtocol(asyncio.DatagramProtocol):
    def __init__(self, service: TftpService) -> None:
        self._service = service

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            self._service._request_received(data, (str(addr[0]), int(addr[1])))
        except Exception:  # the per-datagram guard: log, drop, keep serving
            self._service.stats.bad_datagrams += 1
            log.exception("tftp.bad_datagram peer=%s", addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("tftp.socket_error error=%s", exc)


class _Session(asyncio.DatagramProtocol):
    """One transfer's endpoint (its TID): feeds the machine, carries out its actions."""

    def __init__(self, service: TftpService, transfer: ReadTransfer, name: str,
                 peer: tuple[str, int]) -> None:
        self._service = service
        self._transfer = transfer
        self.name = name
        self.peer = peer
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._ended = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport on 3.11.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            self._transfer.datagram_received(data, now=self._loop.time())
            self.drain()
        except Exception:  # the per-datagram guard: log, drop, keep serving
            self._service.stats.bad_datagrams += 1
            log.exception("tftp.bad_datagram peer=%s file=%s", addr, self.name)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable on the connected socket: the client is gone.
        if self._ended:
            return
        stats = self._transfer.stats
        self.abort()
        self._service._transfer_failed(self, int(ErrorCode.NOT_DEFINED),
                                       f"client unreachable: {exc}", stats)

    def drain(self) -> None:
        transport = self._transport
        assert transport is not None
        transfer = self._transfer
        while (action := transfer.next_action()) is not None:
            match action:
                case SendDatagram(data):
                    transport.sendto(data)
                case SetTimer(deadline):
                    self._set_timer(deadline)
                case Finished(stats):
                    self._end()
                    self._service._transfer_done(self, stats)
                case Failed():
                    self._end()
                    self._service._failed(self, action)

    def abort(self) -> None:
        self._transfer.close()
        self._end()

    def _set_timer(self, deadline: float) -> None:
        # Deadlines only move forward, so one pending handle is re-armed lazily when it fires
        # instead of being cancelled and rescheduled on every ACK.
        self._deadline = deadline
        if self._timer is None or self._timer.when() > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._ended:
            return
        now = self._loop.time()
        if self._deadline - now > 0.001:  # progress moved the deadline on while we waited
            self._timer = self._loop.call_at(self._deadline, self._on_timer)
            return
        # The loop may run a handle up to its clock resolution early: count that as on time.
        self._transfer.timer_expired(now=max(now, self._deadline))
        self.drain()

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.close()
        self._service._session_ended(self)
