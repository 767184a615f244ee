"""Lock-step TFTP transfers (windowsize 1, as every PXE ROM asks): the data phase on a socket of
their own (the TID), turning each ACK into the next DATA with `ReadTransfer.lockstep_ack` (no
action objects, no transport layers).

Two runners, one interface (`start`, `abort`, `name`, `peer`, outcomes handed to the service):
- `LoopLockstepSession` on the event loop: a non-blocking socket with `loop.add_reader`; its
  readable callback receives, answers and sends in one go. Nothing crosses threads, so a
  boot storm of hundreds of transfers pays no GIL hand-off per block (bench/storm: with a
  thread per transfer, each block waited for the loop to let the GIL go).
- `LockstepSession` in a thread of its own, on a blocking socket whose receive timeout is the
  retransmit deadline: one block per `recv` + `send`, without the loop's wake-up, for the
  single fast transfer (bench/tftp). The service starts one only while it has at most
  `lockstep_threads` transfers (serve/tftp.py): in a storm, threads and the loop that all want
  the GIL make every block wait for the others. STYLE rule 9 (no thread per
  transfer) is bent for it; the thread owns the transfer and its socket and hands its outcome
  to the loop (`call_soon_threadsafe`), which alone touches the service's state.
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
from typing import Any

from oneroot.proto.tftp import ErrorCode, Failed, Finished, ReadTransfer, SendDatagram, SetTimer

log = logging.getLogger(__name__)

_MAX_DATAGRAM = 65536
_TIMEOUT_SLACK = 0.005  # re-set the socket's receive timeout only when it is off by more


class _Lockstep:
    """What both runners share: the transfer, its connected UDP socket (its TID), callbacks."""

    def __init__(self, transfer: ReadTransfer, name: str, peer: tuple[str, int], *,
                 bind: IPv4Address, on_outcome: Callable[[Any, Finished | Failed], None],
                 on_ended: Callable[[Any], None], on_bad_datagram: Callable[[], None]) -> None:
        self.name = name
        self.peer = peer
        self._transfer = transfer
        self._on_outcome = on_outcome
        self._on_ended = on_ended
        self._on_bad_datagram = on_bad_datagram
        self._loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((str(bind), 0))
            sock.connect(peer)
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    def _unreachable(self, exc: OSError) -> Failed:
        return Failed(int(ErrorCode.NOT_DEFINED), f"client unreachable: {exc}",
                      self._transfer.stats)


class LoopLockstepSession(_Lockstep):
    """One transfer on the event loop: a reader callback per socket, a lazily re-armed timer."""

    def __init__(self, transfer: ReadTransfer, name: str, peer: tuple[str, int], *,
                 bind: IPv4Address, on_outcome: Callable[[Any, Finished | Failed], None],
                 on_ended: Callable[[Any], None], on_bad_datagram: Callable[[], None]) -> None:
        super().__init__(transfer, name, peer, bind=bind, on_outcome=on_outcome,
                         on_ended=on_ended, on_bad_datagram=on_bad_datagram)
        self._sock.setblocking(False)
        self._timer: asyncio.TimerHandle | None = None
        self._ended = False

    def start(self) -> None:
        self._loop.add_reader(self._sock.fileno(), self._readable)
        self._act()

    def abort(self) -> None:
        """The service is closing: end now, no outcome."""
        if not self._ended:
            self._end()

    def _readable(self) -> None:
        transfer, sock = self._transfer, self._sock
        while not self._ended:
            try:
                data = sock.recv(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError as exc:  # ICMP: the client is gone
                self._finish(self._unreachable(exc))
                return
            now = self._loop.time()
            following = transfer.lockstep_ack(data, now=now)
            if following is not None:  # nearly every ACK: the next block, no actions
                self._send(following)
                self._arm()
                continue
            try:
                transfer.datagram_received(data, now=now)
            except Exception:  # the per-datagram guard: log, drop, keep serving
                log.exception("tftp.bad_datagram peer=%s file=%s", self.peer, self.name)
                self._on_bad_datagram()
                continue
            self._act()

    def _act(self) -> None:
        while not self._ended and (action := self._transfer.next_action()) is not None:
            match action:
                case SendDatagram(data):
                    self._send(data)
                case SetTimer():
                    self._arm()
                case Finished() | Failed():
                    self._finish(action)

    def _send(self, data: bytes) -> None:
        try:
            self._sock.send(data)
        except BlockingIOError:
            pass  # the socket buffer is full: the retransmit timer sends it again
        except ConnectionRefusedError as exc:
            self._finish(self._unreachable(exc))

    def _arm(self) -> None:
        # Deadlines only move forward, so one pending handle is re-armed when it fires rather
        # than cancelled and rescheduled on every ACK.
        if self._timer is None and not self._ended:
            self._timer = self._loop.call_at(self._transfer.deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._ended:
            return
        now, deadline = self._loop.time(), self._transfer.deadline
        if deadline - now > 0.001:  # progress moved the deadline on while we waited
            self._arm()
            return
        # The loop may run a handle up to its clock resolution early: count that as on time.
        self._transfer.timer_expired(now=max(now, deadline))
        self._act()

    def _finish(self, outcome: Finished | Failed) -> None:
        if self._ended:
            return
        self._end()
        self._on_outcome(self, outcome)

    def _end(self) -> None:
        self._ended = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop.remove_reader(self._sock.fileno())
        self._transfer.close()
        self._sock.close()
        self._on_ended(self)


class LockstepSession(_Lockstep):
    """One transfer on a blocking connected UDP socket (its TID) in a daemon thread."""

    def __init__(self, transfer: ReadTransfer, name: str, peer: tuple[str, int], *,
                 bind: IPv4Address, on_outcome: Callable[[Any, Finished | Failed], None],
                 on_ended: Callable[[Any], None], on_bad_datagram: Callable[[], None]) -> None:
        super().__init__(transfer, name, peer, bind=bind, on_outcome=on_outcome,
                         on_ended=on_ended, on_bad_datagram=on_bad_datagram)
        self._lock = threading.Lock()
        self._ended = False
        self._stop = False
        self._receive_timeout = -1.0

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
