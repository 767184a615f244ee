"""The server side of one TFTP read transfer, as a sans-IO state machine.

    t = ReadTransfer(source, request, config, now=now)   # request: the client's ReadRequest
    t.datagram_received(data, now=now)                     # each datagram from the client's TID
    t.timer_expired(now=now)                               # once the last SetTimer deadline passed
    while (action := t.next_action()) is not None:
        match action:
            case SendDatagram(data): ...                     # to the client, from this TID
            case SetTimer(deadline): ...                     # replaces any earlier timer
            case Finished(stats) | Failed(...): ...          # terminal; cancel the timer

States, and what moves between them:

    state          event                           actions, next state
    ─────────────  ──────────────────────────────  ───────────────────────────────────────────
    (start)        options accepted                OACK, timer                 → OACK_SENT
    (start)        no options accepted             DATA 1..w, timer            → SENDING
    (start)        mode not octet/netascii         ERROR 4, Failed             → DONE
    OACK_SENT      ACK 0                           DATA 1..w, timer            → SENDING
    SENDING        ACK n, acked < n <= sent        slide; resend n+1..sent if  → SENDING or,
                                                   any (RFC 7440: the client    after the last
                                                   lost n+1), fill window,      block, Finished
                                                   timer                        → DONE
    SENDING        ACK n <= acked or n > sent      nothing (counted): a duplicate ACK never
                                                   causes a resend (no sorcerer's apprentice)
    any live       timeout                         resend OACK / the unacked window, wait twice
                                                   as long (up to max_interval); after
                                                   `max_retries` ERROR 0, Failed → DONE
    any live       ERROR from the client           Failed (nothing sent)       → DONE
    any live       DATA/RRQ/WRQ/OACK               ERROR 4, Failed             → DONE
    any live       undecodable datagram            ignored (counted)

Block numbers are kept as unbounded integers inside and sent modulo 65536, wrapping 65535 → 0
as tftp-hpa, curl and atftp expect; an ACK's absolute block is the one in the window whose
low 16 bits match, which is unambiguous because a window is at most 65535 blocks.
The transfer owns `source` and closes it when it ends (or on `close()`).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from oneroot.errors import MalformedPacket
from oneroot.proto.tftp.options import DEFAULT_BLKSIZE, MAX_TIMEOUT, Negotiated, negotiate
from oneroot.proto.tftp.packets import (
    Ack,
    Error,
    ErrorCode,
    OptionAck,
    ReadRequest,
    parse_packet,
)
from oneroot.proto.tftp.source import FileSource, NetasciiSource

__all__ = [
    "Action",
    "Failed",
    "Finished",
    "ReadTransfer",
    "SendDatagram",
    "SetTimer",
    "TransferConfig",
    "TransferStats",
]

_DATA_OPCODE = b"\x00\x03"
_ACK_OPCODE = 4
_ERROR_OPCODE = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferConfig:
    max_blksize: int = 1468  # fits a 1500-byte Ethernet MTU with IPv4+UDP+TFTP headers
    max_windowsize: int = 64
    max_window_bytes: int = 1 << 16  # windowsize x blksize, see options.py
    timeout: float = 1.0  # seconds before a retransmit, unless the client negotiated one
    max_option_timeout: int = MAX_TIMEOUT  # a larger client `timeout` option is not accepted
    max_retries: int = 5  # retransmits of the same window before giving up
    # Each retry doubles the wait, up to this (never below the base timeout). Without backoff a
    # client that re-ACKs only once per timeout of its own (atftp) may never time out, since
    # our retransmits keep arriving, and a lost re-ACK stalls the transfer.
    max_interval: float = 8.0


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferStats:
    bytes: int = 0  # payload bytes, each block counted once (netascii: after conversion)
    blocks: int = 0
    retransmits: int = 0  # datagrams sent again (DATA or OACK)
    duplicate_acks: int = 0  # ACKs that acknowledged nothing new (ignored)
    duration: float = 0.0
    blksize: int = DEFAULT_BLKSIZE
    windowsize: int = 1
    tsize: int | None = None
    timeout: float = 1.0
    options: tuple[tuple[str, str], ...] = ()  # what the OACK echoed


@dataclass(frozen=True, slots=True)
class SendDatagram:
    data: bytes


@dataclass(frozen=True, slots=True)
class SetTimer:
    deadline: float


@dataclass(frozen=True, slots=True)
class Finished:
    stats: TransferStats


@dataclass(frozen=True, slots=True)
class Failed:
    error_code: int
    message: str
    stats: TransferStats = field(default_factory=TransferStats)
    by_peer: bool = False  # the client sent the ERROR; we sent nothing

    @property
    def size_probe(self) -> bool:
        """The client only wanted the file's size: it asked for `tsize`, and ended the transfer
        (a PXE ROM's ERROR 0 "TFTP Aborted") after the OACK, before any data. Not a failure;
        ERROR 8 (the client refuses our options) still is."""
        return (self.by_peer and self.stats.tsize is not None and self.stats.blocks == 0
                and self.stats.bytes == 0 and self.error_code != ErrorCode.OPTION_REFUSED)


Action = SendDatagram | SetTimer | Finished | Failed


class _State(enum.Enum):
    OACK_SENT = enum.auto()
    SENDING = enum.auto()
    DONE = enum.auto()


class ReadTransfer:
    def __init__(
        self, source: FileSource, request: ReadRequest, config: TransferConfig, *, now: float
    ) -> None:
        self._actions: deque[Action] = deque()
        self._config = config
        self._started = now
        self._deadline = now
        self._retries = 0
        self._retransmits = 0
        self._duplicate_acks = 0
        self._bytes = 0
        self._acked = 0  # absolute number of the last block the client acknowledged
        self._sent = 0  # absolute number of the highest block sent
        self._last: int | None = None  # absolute number of the final (short) block, once read
        self._window: deque[bytes] = deque()  # datagrams for blocks acked+1 .. sent
        self._oack = b""
        self._source: FileSource = source
        self._closed = False
        self._ended: float | None = None

        mode = request.mode.lower()
        if mode == "netascii":
            self._source = NetasciiSource(source)
            size = None
        elif mode == "octet":
            size = source.size()
        else:
            self._negotiated = Negotiated()
            self._timeout = config.timeout
            self._state = _State.SENDING
            self._fail(ErrorCode.ILLEGAL_OPERATION, f"transfer mode {request.mode!r} not supported",
                       now=now)
            return
        self._negotiated = negotiate(
            request.options,
            size=size,
            max_blksize=config.max_blksize,
            max_windowsize=config.max_windowsize,
            max_timeout=config.max_option_timeout,
            max_window_bytes=config.max_window_bytes,
        )
        self._blksize = self._negotiated.blksize
        self._windowsize = self._negotiated.windowsize
        self._timeout = (
            float(self._negotiated.timeout) if self._negotiated.timeout else config.timeout
        )
        if self._negotiated.echoed:
            self._state = _State.OACK_SENT
            self._oack = OptionAck(options=self._negotiated.echoed).to_bytes()
            self._actions.append(SendDatagram(self._oack))
            self._arm(now)
        else:
            self._state = _State.SENDING
            self._fill(now)

    # -- inputs -----------------------------------------------------------------------------

    def datagram_received(self, data: bytes, *, now: float) -> None:
        if self._state is _State.DONE:
            return
        # Fast path: ACKs are nearly all the traffic.
        if len(data) == 4 and data[0] == 0 and data[1] == _ACK_OPCODE:
            self._ack_received((data[2] << 8) | data[3], now)
            return
        try:
            packet = parse_packet(data)
        except MalformedPacket:
            if data[:2] == b"\x00\x05":  # an ERROR without its NUL: the client gave up all the same
                code = int.from_bytes(data[2:4], "big") if len(data) >= 4 else 0
                self._peer_error(code, "", now)
            # anything else undecodable is ignored: the timer recovers whatever it cost
            return
        match packet:
            case Ack(block=block):
                self._ack_received(block, now)
            case Error(code=code, message=message):
                self._peer_error(code, message, now)
            case _:
                self._fail(ErrorCode.ILLEGAL_OPERATION,
                           f"unexpected {type(packet).__name__} during a read", now=now)

    def lockstep_ack(self, data: bytes, *, now: float) -> bytes | None:
        """The lock-step fast path: when `data` is the ACK of the newest block of a windowsize-1
        transfer that has more to send, the next DATA datagram, with the deadline re-armed
        (`deadline`), exactly as `datagram_received` would but without queueing actions.
        None: nothing was done; feed `data` to `datagram_received` instead."""
        sent = self._sent
        if (len(data) != 4 or data[0] != 0 or data[1] != _ACK_OPCODE
                or self._state is not _State.SENDING or self._windowsize != 1
                or self._last is not None or self._actions
                or (data[2] << 8) | data[3] != sent & 0xFFFF or sent == self._acked):
            return None
        self._window.popleft()
        self._acked = sent
        self._retries = 0
        datagram = self._read_block(now)
        if datagram is None:  # a read error: the failure is queued
            return None
        self._deadline = now + self._timeout  # no retries pending: `_arm`'s interval
        return datagram

    @property
    def deadline(self) -> float:
        """When the retransmit timer fires (the last SetTimer's deadline)."""
        return self._deadline

    def timer_expired(self, *, now: float) -> None:
        if self._state is _State.DONE or now < self._deadline:
            return  # a stale timer: progress moved the deadline on
        self._retries += 1
        if self._retries > self._config.max_retries:
            self._fail(ErrorCode.NOT_DEFINED,
                       f"timed out after {self._config.max_retries} retries", now=now)
            return
        if self._state is _State.OACK_SENT:
            self._actions.append(SendDatagram(self._oack))
            self._retransmits += 1
        else:
            for datagram in self._window:
                self._actions.append(SendDatagram(datagram))
            self._retransmits += len(self._window)
        self._arm(now)

    def next_action(self) -> Action | None:
        return self._actions.popleft() if self._actions else None

    def close(self) -> None:
        """Release the source (the edge calls this when it drops a transfer early)."""
        if not self._closed:
            self._closed = True
            self._source.close()

    # -- read-only views --------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self._state is _State.DONE

    @property
    def stats(self) -> TransferStats:
        return self._stats(self._ended if self._ended is not None else self._started)

    # -- internals --------------------------------------------------------------------------

    def _stats(self, now: float) -> TransferStats:
        neg = self._negotiated
        return TransferStats(
            bytes=self._bytes,
            blocks=self._sent,
            retransmits=self._retransmits,
            duplicate_acks=self._duplicate_acks,
            duration=max(0.0, now - self._started),
            blksize=neg.blksize,
            windowsize=neg.windowsize,
            tsize=neg.tsize,
            timeout=self._timeout,
            options=neg.echoed,
        )

    def _arm(self, now: float) -> None:
        interval = self._timeout
        if self._retries:
            interval = min(interval * 2**self._retries, max(interval, self._config.max_interval))
        self._deadline = now + interval
        self._actions.append(SetTimer(self._deadline))

    def _ack_received(self, block: int, now: float) -> None:
        if self._state is _State.OACK_SENT:
            if block == 0:
                self._state = _State.SENDING
                self._retries = 0
                self._fill(now)
            else:
                self._duplicate_acks += 1
            return
        acked = self._acked
        n = acked + ((block - acked) & 0xFFFF)
        if n == acked or n > self._sent:
            self._duplicate_acks += 1  # old, duplicate or from the future: never resend for it
            return
        window = self._window
        for _ in range(n - acked):
            window.popleft()
        self._acked = n
        self._retries = 0
        if n == self._last:
            self._finish(now)
            return
        if window:
            # RFC 7440: an ACK inside the window means the client lost block n+1 and discards
            # what followed; start the window again from there.
            for datagram in window:
                self._actions.append(SendDatagram(datagram))
            self._retransmits += len(window)
        self._fill(now)

    def _fill(self, now: float) -> None:
        """Send new blocks until the window is full or the last block is out, then arm."""
        actions = self._actions
        limit = self._acked + self._windowsize
        while self._sent < limit and self._last is None:
            datagram = self._read_block(now)
            if datagram is None:
                return
            actions.append(SendDatagram(datagram))
        self._arm(now)

    def _read_block(self, now: float) -> bytes | None:
        """Read the next block into the window and return its DATA datagram; None after a read
        error (the transfer has failed)."""
        blksize = self._blksize
        try:
            chunk = self._source.read(blksize)
        except OSError as exc:
            self._fail(ErrorCode.NOT_DEFINED, f"read error: {exc.strerror or exc}", now=now)
            return None
        self._sent += 1
        self._bytes += len(chunk)
        datagram = b"".join((_DATA_OPCODE, (self._sent & 0xFFFF).to_bytes(2, "big"), chunk))
        self._window.append(datagram)
        if len(chunk) < blksize:
            self._last = self._sent
        return datagram

    def _peer_error(self, code: int, message: str, now: float) -> None:
        self._end(now)
        self._actions.append(
            Failed(code, f"client error: {message}" if message else "client error",
                   self._stats(now), by_peer=True)
        )

    def _fail(self, code: ErrorCode, message: str, *, now: float) -> None:
        self._end(now)
        self._actions.append(SendDatagram(Error(code=code, message=message).to_bytes()))
        self._actions.append(Failed(int(code), message, self._stats(now)))

    def _finish(self, now: float) -> None:
        self._end(now)
        self._actions.append(Finished(self._stats(now)))

    def _end(self, now: float) -> None:
        self._state = _State.DONE
        self._ended = now
        self._window.clear()
        self.close()
