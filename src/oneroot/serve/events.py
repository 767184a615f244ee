"""Boot events from every service, enriched with the node's name, batched into SQLite."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import time
from collections.abc import Callable

from oneroot.inventory.events import EventStore
from oneroot.model.events import BootEvent

log = logging.getLogger(__name__)


class EventRecorder:
    """`recorder(event)` is cheap and never blocks the loop; `run()` writes batches."""

    def __init__(self, store: EventStore,
                 node_of_peer: Callable[[ipaddress.IPv4Address], str | None]) -> None:
        self._store = store
        self._node_of_peer = node_of_peer
        self._pending: list[BootEvent] = []
        self._wake = asyncio.Event()
        self.latest: dict[str, BootEvent] = {}
        self.listeners: list[Callable[[BootEvent], None]] = []

    def __call__(self, event: BootEvent) -> None:
        if event.node is None and event.peer is not None:
            node = self._node_of_peer(event.peer)
            if node is not None:
                event = dataclasses.replace(event, node=node)
        self._pending.append(event)
        if event.node is not None:
            self.latest[event.node] = event
        for listener in self.listeners:
            listener(event)
        self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                await asyncio.sleep(0.05)  # gather a burst into one transaction
                await self.flush()
        finally:
            await self.flush()

    async def flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            await asyncio.to_thread(self._store.record, batch)
        except Exception:  # a full disk must not stop the boot services
            log.exception("events.write_failed count=%d", len(batch))


def now() -> float:
    return time.time()
