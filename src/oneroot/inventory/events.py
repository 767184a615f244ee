"""Boot events in SQLite (WAL): what was served to each node, and each node's last stage."""

from __future__ import annotations

import ipaddress
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from oneroot.inventory.sqlite import connect, migrate
from oneroot.model.events import BootEvent

_SCHEMA = [(1, """
CREATE TABLE events (
    id       INTEGER PRIMARY KEY,
    time     REAL NOT NULL,
    kind     TEXT NOT NULL,
    node     TEXT,
    mac      TEXT,
    peer     TEXT,
    stage    TEXT,
    file     TEXT,
    bytes    INTEGER NOT NULL DEFAULT 0,
    duration REAL NOT NULL DEFAULT 0,
    detail   TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_node_time ON events(node, time);
CREATE TABLE node_status (
    node   TEXT PRIMARY KEY,
    stage  TEXT NOT NULL,
    time   REAL NOT NULL,
    peer   TEXT,
    detail TEXT NOT NULL DEFAULT '{}'
)
""")]

# Events that move a node's stage forward, and the stage they mean.
_STAGE_OF_KIND = {
    "dhcp.offer": "dhcp.offer",
    "dhcp.ack": "dhcp.ack",
    "tftp.done": "tftp",
    "http.done": "http",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeStatus:
    node: str
    stage: str
    time: float
    peer: str | None
    detail: dict[str, str]


class EventStore:
    def __init__(self, path: Path, *, synchronous: str = "NORMAL") -> None:
        self._conn = connect(path)
        # Events are a log, not a promise to a client: NORMAL is durable enough under WAL.
        self._conn.execute(f"PRAGMA synchronous={synchronous}")
        migrate(self._conn, _SCHEMA)

    def close(self) -> None:
        self._conn.close()

    def record(self, events: Iterable[BootEvent]) -> None:
        c = self._conn
        c.execute("BEGIN")
        try:
            for ev in events:
                detail = json.dumps(dict(ev.detail), sort_keys=True)
                peer = str(ev.peer) if ev.peer else None
                c.execute(
                    "INSERT INTO events(time, kind, node, mac, peer, stage, file, bytes, "
                    "duration, detail) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (ev.time, ev.kind, ev.node, ev.mac, peer, ev.stage, ev.file, ev.bytes,
                     ev.duration, detail))
                stage = ev.stage if ev.kind == "stage" else _STAGE_OF_KIND.get(ev.kind)
                if ev.node and stage:
                    c.execute(
                        "INSERT INTO node_status(node, stage, time, peer, detail) "
                        "VALUES (?,?,?,?,?) ON CONFLICT(node) DO UPDATE SET "
                        "stage=excluded.stage, time=excluded.time, peer=excluded.peer, "
                        "detail=excluded.detail", (ev.node, stage, ev.time, peer, detail))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def prune(self, *, now: float, max_age: float, keep: int) -> int:
        """Drop events older than `max_age` seconds and all but the newest `keep`; the number
        dropped. Each node's last stage (node_status) is kept."""
        c = self._conn
        c.execute("BEGIN")
        try:
            dropped = c.execute("DELETE FROM events WHERE time < ?", (now - max_age,)).rowcount
            dropped += c.execute(
                "DELETE FROM events WHERE id <= "
                "(SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?)", (keep,)).rowcount
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return dropped

    def count(self) -> int:
        (n,) = self._conn.execute("SELECT count(*) FROM events").fetchone()
        return int(n)

    def recent(self, limit: int) -> list[BootEvent]:
        """The newest `limit` events that name a node, oldest first (the status page's
        timelines, after a restart)."""
        rows = self._conn.execute(
            "SELECT time, kind, node, mac, peer, stage, file, bytes, duration, detail "
            "FROM events WHERE node IS NOT NULL ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [BootEvent(time=t, kind=k, node=n, mac=m,
                          peer=ipaddress.IPv4Address(p) if p else None, stage=st, file=f,
                          bytes=b, duration=d, detail=json.loads(dt))
                for t, k, n, m, p, st, f, b, d, dt in reversed(rows)]

    def status(self) -> dict[str, NodeStatus]:
        rows = self._conn.execute("SELECT node, stage, time, peer, detail FROM node_status")
        return {n: NodeStatus(node=n, stage=s, time=t, peer=p, detail=json.loads(d))
                for n, s, t, p, d in rows}

    @property
    def connection(self) -> sqlite3.Connection:
        return self._conn
