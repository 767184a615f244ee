"""While the event database refuses writes (PostgreSQL down, a full disk), serve keeps its
events in a bounded queue and writes them, in order, when the database takes them again."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from oneroot.inventory.events import EventStore
from oneroot.model.events import BootEvent
from oneroot.model.limits import DEFAULT_LIMITS
from oneroot.serve.events import EventRecorder


class OutageStore(EventStore):
    """A real SQLite event store whose writes fail while `down` (an outage)."""

    down = True
    written = 0  # batches written (read from the loop; the writes run in a worker thread)

    def record(self, events: Iterable[BootEvent]) -> None:
        if self.down:
            raise OSError("connection refused")
        super().record(events)
        self.written += 1


def test_events_queue_bounded_during_an_outage_then_catch_up_in_order(tmp_path: Path) -> None:
    store = OutageStore(tmp_path / "events.db")
    limits = dataclasses.replace(DEFAULT_LIMITS, events_pending=50)
    recorder = EventRecorder(store, lambda ip: None, limits, server="a")

    async def scenario() -> None:
        for n in range(30):
            recorder(BootEvent(time=float(n), kind="stage", node="n1", stage="init"))
        flushing = asyncio.create_task(recorder.flush())
        await asyncio.sleep(0)  # the batch of 30 is out, its write about to fail
        for n in range(30, 70):  # newer events meanwhile: 70 in all, for a bound of 50
            recorder(BootEvent(time=float(n), kind="stage", node="n1", stage="init"))
        await flushing
        assert recorder.dropped == 20  # the oldest went
        for n in range(70, 80):  # the queue is full: newer ones are not queued
            recorder(BootEvent(time=float(n), kind="stage", node="n1", stage="init"))
        assert recorder.dropped == 30
        store.down = False
        await recorder.flush()

    asyncio.run(scenario())
    times = [t for (t,) in store.connection.execute("SELECT time FROM events ORDER BY id")]
    assert times == [float(n) for n in range(20, 70)]  # in order, within the bound
    servers = {s for (s,) in store.connection.execute("SELECT DISTINCT server FROM events")}
    assert servers == {"a"}
    store.close()


def test_recorder_retries_without_a_new_event(tmp_path: Path) -> None:
    """The run loop tries the queued batch again by itself after RETRY_SECONDS."""
    store = OutageStore(tmp_path / "events.db")
    recorder = EventRecorder(store, lambda ip: None)

    async def until(ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 30  # a bound for a loaded machine, not a wait
        while not ready():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.01)

    async def scenario() -> None:
        task = asyncio.create_task(recorder.run())
        recorder(BootEvent(time=1.0, kind="dhcp.ack", node="n1"))
        await until(lambda: recorder.write_failures >= 1, "no failed write")
        store.down = False
        # No new event: the retry timer writes it.
        await until(lambda: store.written == 1, "the batch was not retried")
        task.cancel()

    asyncio.run(scenario())
    assert store.count() == 1
    store.close()


def test_dhcp_replies_to_pool_clients_are_not_stored(tmp_path: Path) -> None:
    """A node's OFFER and ACK are two stages and both are stored; the replies to a client no
    node owns (nothing reads them back) are counted, not queued, not stored."""
    store = EventStore(tmp_path / "events.db")
    node_address = ipaddress.IPv4Address("10.0.0.11")
    seen: list[BootEvent] = []
    recorder = EventRecorder(store, lambda ip: "node01" if ip == node_address else None)
    recorder.listeners.append(seen.append)
    pool = ipaddress.IPv4Address("10.0.0.200")
    for t, kind in enumerate(("dhcp.offer", "dhcp.ack", "dhcp.nak")):
        recorder(BootEvent(time=float(t), kind=kind, mac="52:54:00:00:00:99", peer=pool))
    recorder(BootEvent(time=3.0, kind="dhcp.offer", node="node02", peer=pool))
    recorder(BootEvent(time=4.0, kind="dhcp.ack", node="node02", peer=pool))
    recorder(BootEvent(time=5.0, kind="dhcp.ack", peer=node_address))  # a node's address
    recorder(BootEvent(time=6.0, kind="tftp.done", peer=pool, file="undionly.kpxe"))
    asyncio.run(recorder.flush())
    rows = list(store.connection.execute("SELECT kind, node FROM events ORDER BY id"))
    assert rows == [("dhcp.offer", "node02"), ("dhcp.ack", "node02"), ("dhcp.ack", "node01"),
                    ("tftp.done", None)]
    assert recorder.pool_replies == 3 and len(seen) == 4
    assert store.status()["node02"].stage == "dhcp.ack"
    store.close()
