"""Lock-step TFTP transfers (windowsize 1, as every PXE ROM asks) in a thread of their own.

A lock-step transfer sends one block per round trip, so its rate is set by how fast the server
turns an ACK into the next DATA. On the event loop that turn is an epoll wake-up, a loop
iteration, a transport callback and a transport send around ~4 µs of protocol work; here it is
`recv`, the same sans-IO `ReadTransfer`, and `send`, on a blocking socket whose receive timeout
is the transfer's retransmit deadline (the GIL is free while the thread waits in `recv`). The
service runs at most `lockstep_threads` of these at once; other transfers stay on the loop.

STYLE rule 9 (no thread per transfer) is bent here, for the reason above and within that cap;
the thread owns the transfer and its socket, and hands every outcome to the loop
(`call_soon_threadsafe`), which alone touches the service's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from ipaddress import IPv4Address

from oneroot.proto.tftp import ErrorCode, Failed, Finished, ReadTransfer, SendDatagram, SetTimer

log = logging.getLogger(__name__)

_MAX_DATAGRAM = 65536
_TIMEOUT_SLACK = 0.005  # re-set the socket's receive timeout only when it is off by more


class LockstepSession:
    """One transfer on a connected UDP socket (its TID) in a daemon thread."""

    def __init__(self, transfer: ReadTransfer, name: str, peer: tuple[str, int], *,
                 bind: IPv4Address, on_outcome: Callable[[LockstepSession, Finished | Failed],
                                                         None],
                 on_ended: Callable[[LockstepSession], None],
                 on_bad_datagram: Callable[[], None]) -> None:
        self.name = name
        self.peer = peer
        self._transfer = transfer
        self._on_outcome = on_outcome
        self._on_ended = on_ended
        self._on_bad_datagram = on_bad_datagram
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._ended = False
        self._stop = False
        self._receive_timeout = -1.0
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((str(bind), 0))
            sock.connect(peer)
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    def start(self) -> None:
        threading.Thread(target=self._run, name=f"tftp {self.peer[0]}:{self.peer[1]}",
                         daemon=True).start()

    def abort(self) -> None:
        """From the loop: end now (the service is closing); the thread lets go soon after."""
        if not self._claim_end():
            return
        self._stop = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the thread's recv
        self._on_ended(self)

    # -- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        outcome: Finished | Failed | None = None
        try:
            outcome = self._serve()
        except Exception as exc:  # the guard: a bug here must not leave the session counted
            log.exception("tftp.lockstep_failed peer=%s file=%s", self.peer, self.name)
            outcome = Failed(int(ErrorCode.NOT_DEFINED), f"server error: {exc}",
                             self._transfer.stats)
        finally:
            self._transfer.close()
            self._sock.close()
        if outcome is not None and self._claim_end():
            self._call_loop(self._report, outcome)

    def _serve(self) -> Finished | Failed | None:
        transfer, sock = self._transfer, self._sock
        deadline = time.monotonic()
        while True:
            while (action := transfer.next_action()) is not None:
                match action:
                    case SendDatagram(data):
                        try:
                            sock.send(data)
                        except ConnectionRefusedError as exc:  # ICMP: the client is gone
                            return self._unreachable(exc)
                    case SetTimer(when):
                        deadline = when
                    case Finished() | Failed():
                        return action
            now = time.monotonic()
            if now >= deadline:
                transfer.timer_expired(now=now)
                continue
            self._set_receive_timeout(deadline - now)
            try:
                data = sock.recv(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError, TimeoutError):
                continue  # the receive timeout: the deadline check above decides
            except ConnectionRefusedError as exc:
                return self._unreachable(exc)
            if self._stop:
                return None
            now = time.monotonic()
            following = transfer.lockstep_ack(data, now=now)
            if following is not None:  # nearly every ACK: the next block, no actions
                try:
                    sock.send(following)
                except ConnectionRefusedError as exc:
                    return self._unreachable(exc)
                deadline = transfer.deadline
                continue
            try:
                transfer.datagram_received(data, now=now)
            except Exception:  # the per-datagram guard: log, drop, keep serving
                log.exception("tftp.bad_datagram peer=%s file=%s", self.peer, self.name)
                self._call_loop(self._on_bad_datagram)

    def _set_receive_timeout(self, seconds: float) -> None:
        if abs(seconds - self._receive_timeout) <= _TIMEOUT_SLACK:
            return
        self._receive_timeout = seconds
        whole = int(seconds)
        micro = int((seconds - whole) * 1e6)
        if whole == 0 and micro == 0:
            micro = 1  # a zero timeout would mean none: wait forever
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                              struct.pack("ll", whole, micro))

    def _unreachable(self, exc: OSError) -> Failed:
        return Failed(int(ErrorCode.NOT_DEFINED), f"client unreachable: {exc}",
                      self._transfer.stats)

    def _claim_end(self) -> bool:
        """Exactly one of the thread's outcome and the loop's abort ends the session."""
        with self._lock:
            if self._ended:
                return False
            self._ended = True
            return True

    def _call_loop(self, callback: Callable[..., None], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: serve has stopped
            self._loop.call_soon_threadsafe(callback, *args)

    # -- back on the loop -------------------------------------------------------------------

    def _report(self, outcome: Finished | Failed) -> None:
        self._on_ended(self)
        self._on_outcome(self, outcome)
