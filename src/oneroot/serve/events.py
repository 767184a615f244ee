"""Boot events from every service, enriched with the node's name, batched into the database.

Every event is cut to the sizes in `Limits` before it is queued, the queue itself is bounded,
and old events are pruned by age and count, so a client that floods the server with refused
requests cannot fill the disk that the leases live on. A batch the database refuses (PostgreSQL
down, a full disk) goes back to the head of the queue, within the same bound, and is tried
again every `RETRY_SECONDS` until a write succeeds (the events then catch up, in order).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import time
from collections.abc import Callable

from oneroot.inventory.events import EventStore
from oneroot.model.events import BootEvent, bounded_event
from oneroot.model.limits import DEFAULT_LIMITS, Limits

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0
# How long a burst of events gathers before its one write (a transaction, in a worker thread).
# Readers of the store (the status API, `oneroot status`) lag by as much, and more on a loaded
# machine: a reader that needs an event it just caused waits for it (test_serve_cli).
BATCH_SECONDS = 0.05
# DHCP replies to a client no node owns (a pool address) are not kept: nothing reads them back
# (status, timelines, boot work and pins follow nodes; the client itself is in the lease store,
# `oneroot node unknown`), and they were two rows per exchange (bench/dhcp/profile_serve.py,
# pool clients only: ~165-200 µs of CPU per exchange with them, ~133-183 µs without).
# A node's OFFER and ACK are two stages and both stay (status board, multi-server races).
_POOL_REPLIES = frozenset({"dhcp.offer", "dhcp.ack", "dhcp.nak"})


class EventRecorder:
    """`recorder(event)` is cheap and never blocks the loop; `run()` writes batches."""

    def __init__(self, store: EventStore,
                 node_of_peer: Callable[[ipaddress.IPv4Address], str | None],
                 limits: Limits = DEFAULT_LIMITS, clock: Callable[[], float] = time.time,
                 server: str | None = None) -> None:
        self._store = store
        self._server = server  # stamped on every event: which server saw it
        self._node_of_peer = node_of_peer
        self._limits = limits
        self._clock = clock
        self._pending: list[BootEvent] = []
        self._wake = asyncio.Event()
        self._next_prune = 0.0
        self.dropped = 0  # events not queued because the queue was full
        self.pool_replies = 0  # DHCP replies to pool clients, counted and not kept
        self.write_failures = 0
        self._failing = False  # the last write failed: its batch waits in the queue
        self.latest: dict[str, BootEvent] = {}
        self.listeners: list[Callable[[BootEvent], None]] = []

    def __call__(self, event: BootEvent) -> None:
        limits = self._limits
        node = event.node
        if node is None and event.peer is not None:
            node = self._node_of_peer(event.peer)
        if node is None and event.kind in _POOL_REPLIES:
            self.pool_replies += 1
            return
        server = self._server if event.server is None else event.server
        if node != event.node or server != event.server:  # one copy, not one per field
            event = dataclasses.replace(event, node=node, server=server)
        event = bounded_event(event, text=limits.event_text,
                              detail_text=limits.event_detail_text,
                              detail_keys=limits.event_detail_keys)
        if len(self._pending) < limits.events_pending:
            self._pending.append(event)
        else:
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warning("events.dropped count=%d reason=queue full", self.dropped)
        self.observe(event)
        self._wake.set()

    def observe(self, event: BootEvent) -> None:
        """An event already stored (by another process): to the listeners, not to the store."""
        if event.node is not None:
            self.latest[event.node] = event
        for listener in self.listeners:
            listener(event)

    async def run(self) -> None:
        try:
            while True:
                if self._failing:  # retry without waiting for a new event
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), RETRY_SECONDS)
                else:
                    await self._wake.wait()
                self._wake.clear()
                await asyncio.sleep(BATCH_SECONDS)  # gather a burst into one transaction
                await self.flush()
                await self._prune()
        finally:
            await self.flush()

    async def flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            await asyncio.to_thread(self._store.record, batch)
        except Exception as exc:  # a full disk or a database down must not stop the services
            self.write_failures += 1
            if not self._failing:
                log.error("events.write_failed queued=%d error=%s: %s", len(batch),
                          type(exc).__name__, str(exc).strip())
            self._failing = True
            self._requeue(batch)
            return
        if self._failing:
            log.warning("events.caught_up written=%d failures=%d", len(batch),
                        self.write_failures)
        self._failing = False

    def _requeue(self, batch: list[BootEvent]) -> None:
        """`batch` back before the newer events, the oldest dropped beyond the bound."""
        queue = batch + self._pending
        over = len(queue) - self._limits.events_pending
        if over > 0:
            self.dropped += over
            log.warning("events.dropped count=%d reason=queue full while the database is "
                        "unreachable", over)
            queue = queue[over:]
        self._pending = queue

    async def _prune(self) -> None:
        now = self._clock()
        if now < self._next_prune:
            return
        self._next_prune = now + self._limits.prune_interval
        limits = self._limits
        try:
            dropped = await asyncio.to_thread(self._store.prune, now=now,
                                              max_age=limits.events_max_age,
                                              keep=limits.events_kept)
        except Exception as exc:
            log.error("events.prune_failed error=%s: %s", type(exc).__name__, exc)
            return
        if dropped:
            log.info("events.pruned count=%d", dropped)


async def watch_stored_stages(store: EventStore, recorder: EventRecorder,
                              stages: tuple[str, ...], interval: float) -> None:
    """Hand the stage events other processes store (`oneroot power`'s `off` and `power-on`)
    to the recorder's listeners (the status page) as they appear."""
    last: int | None = None
    events: list[BootEvent]
    while True:
        try:
            if last is None:  # only what is stored from now on: the page was seeded before
                last = await asyncio.to_thread(store.last_id)
                events = []
            else:
                last, events = await asyncio.to_thread(store.stages_after, last, stages)
        except Exception as exc:  # a locked or migrating database: ask again next time
            log.error("events.watch_failed error=%s: %s", type(exc).__name__, exc)
            events = []
        for event in events:
            recorder.observe(event)
        await asyncio.sleep(interval)


def now() -> float:
    return time.time()
