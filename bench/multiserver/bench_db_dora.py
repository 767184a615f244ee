"""Database round trips per DORA, and the time an ACK waits for its lease write, on SQLite
and on PostgreSQL: the DHCP service's path (respond → stage → group write) in-process,
without sockets, with a counting wrapper around the store's connection.

    .venv/bin/python bench/multiserver/bench_db_dora.py [--exchanges 2000] [--out DIR]

Each API call on the connection (`execute`, `executemany`, BEGIN, COMMIT) waits for the
server's answer: one round trip (psycopg sends an `executemany` as one pipeline). The
PostgreSQL is a throwaway local one (`oneroot.testing.postgres`: unix socket, fsync off, so
its times are round trips and server CPU, not disk); SQLite is a WAL file at
synchronous=FULL (an fsync per group, as serve runs it) on this machine's /tmp.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from oneroot.inventory.database import Database, Location
from oneroot.inventory.events import EventStore
from oneroot.inventory.leases import LeaseStore
from oneroot.model.events import BootEvent
from oneroot.net import MacAddress
from oneroot.proto.dhcp import (
    DhcpPacket,
    MessageType,
    NetworkConfig,
    NodeBoot,
    parse_packet,
    respond,
)
from oneroot.testing.dhcpmsg import client_message, numbered_mac
from oneroot.testing.postgres import postgres_bin, running_postgres

SERVER = IPv4Address("10.1.0.1")
NETWORK = NetworkConfig(server_address=SERVER, subnet=IPv4Network("10.1.0.0/16"),
                        lease_time=3600, pool=(IPv4Address("10.1.1.0"),
                                               IPv4Address("10.1.250.255")))


class Counting:
    """Wraps a `Database`: counts the calls that wait for the server."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)

    def execute(self, sql: str, params: Sequence[object] = ()) -> Any:
        self.calls += 1
        return self.db.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        self.calls += 1
        self.db.executemany(sql, rows)

    def begin(self) -> None:
        self.calls += 1
        self.db.begin()


def packet(index: int, mtype: MessageType, offer: DhcpPacket | None = None) -> DhcpPacket:
    return client_message(mtype, mac=numbered_mac(index), xid=index, broadcast=True,
                          requested=offer.yiaddr if offer is not None else None,
                          server_id=SERVER if offer is not None else None)


def run(location: Location, events_at: Location, *, mode: str, exchanges: int,
        batch: int) -> dict[str, Any]:
    store = LeaseStore(location, synchronous="FULL", server="bench")
    counting = Counting(store._db)
    store._db = counting  # type: ignore[assignment]
    events = EventStore(events_at)
    event_calls = Counting(events._conn)
    events._conn = event_calls  # type: ignore[assignment]
    nodes: dict[MacAddress, NodeBoot] = {}
    if mode == "nodes":
        for n in range(exchanges):
            mac = packet(n, MessageType.DISCOVER).mac
            nodes[mac] = NodeBoot(name=f"n{n}", address=IPv4Address("10.1.1.0") + n,
                                  bios_file="undionly.kpxe", uefi_file="ipxe.efi",
                                  ipxe_url="http://10.1.0.1/boot/x.ipxe")
    waits: list[float] = []
    start = time.perf_counter()
    for first in range(0, exchanges, batch):
        indexes = range(first, min(first + batch, exchanges))
        offers = [decide(store, packet(n, MessageType.DISCOVER), nodes.get) for n in indexes]
        write(store, waits)
        events.record(event("dhcp.offer", n, mode) for n in indexes)
        for n, offer in zip(indexes, offers, strict=True):
            decide(store, packet(n, MessageType.REQUEST, parse_packet(offer)), nodes.get)
        write(store, waits)
        events.record(event("dhcp.ack", n, mode) for n in indexes)
    seconds = time.perf_counter() - start
    calls = counting.calls
    store.close()
    events.close()
    return {"mode": mode, "batch": batch, "exchanges": exchanges,
            "round_trips_per_dora": round(calls / exchanges, 2),
            "event_round_trips_per_dora": round(event_calls.calls / exchanges, 2),
            "write_ms_median": round(statistics.median(waits) * 1000, 3),
            "write_ms_p95": round(sorted(waits)[int(len(waits) * 0.95)] * 1000, 3),
            "dora_per_second": round(exchanges / seconds)}


def event(kind: str, n: int, mode: str) -> BootEvent:
    """The event serve records for a reply (batched like its recorder, per group here)."""
    return BootEvent(time=time.time(), kind=kind, node=f"n{n}" if mode == "nodes" else None,
                     mac=packet(n, MessageType.DISCOVER).mac.packed.hex(":"), server="bench")


def decide(store: LeaseStore, request: DhcpPacket,
           lookup: Callable[[MacAddress], NodeBoot | None]) -> bytes:
    decision = respond(request, now=time.time(), config=NETWORK, lookup=lookup, leases=store)
    if decision.lease_change is not None:
        store.stage(decision.lease_change)
    if decision.unknown_client is not None:
        store.record_unknown(decision.unknown_client, time.time())
    assert decision.reply is not None, decision.reason
    return decision.reply.to_bytes()


def write(store: LeaseStore, waits: list[float]) -> None:
    """One group write, as serve's `_commit` does it (the time the ACKs of the group wait)."""
    statements = store.take_pending()
    if statements:
        began = time.perf_counter()
        store.settle(store.write(statements))
        waits.append(time.perf_counter() - began)


def machine() -> dict[str, str]:
    version = subprocess.run([str(postgres_bin("postgres")), "--version"], capture_output=True,
                             text=True, check=False).stdout.strip()
    import sqlite3

    return {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
            "postgresql": version, "kernel": platform.release(),
            "cpus": str(len(__import__("os").sched_getaffinity(0))),
            "cpu": next((line.split(":", 1)[1].strip() for line in
                         Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith("model name")), "?")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exchanges", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    rows = []
    with running_postgres() as pg, tempfile.TemporaryDirectory() as tmp:
        for mode in ("nodes", "pool"):
            for batch in (1, 32):
                for engine in ("sqlite", "postgresql"):
                    if engine == "sqlite":
                        location: Location = Path(tmp) / f"{mode}{batch}.db"
                        events_at: Location = Path(tmp) / f"{mode}{batch}-events.db"
                    else:
                        location = events_at = pg.new_schema_url()
                    row = run(location, events_at, mode=mode, exchanges=args.exchanges,
                              batch=batch)
                    rows.append({"engine": engine, **row})
                    print(json.dumps(rows[-1]), file=sys.stderr)
    doc = {"command": " ".join(["bench/multiserver/bench_db_dora.py", *sys.argv[1:]]),
           "machine": machine(), "rows": rows}
    (args.out / "multiserver-db.json").write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
