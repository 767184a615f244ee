"""Which boot files each server holds, by content hash, in the database the servers share.

Each `oneroot serve` with an id publishes its HTTP base (`servers`) and the files of its boot
directory with their SHA-256 (`payloads`, its rows replaced at each publish). For each name the
wanted content is the one last modified on any server; a server whose copy differs, or that
has none, fetches it from a server that has it (`ops.payloads`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from oneroot.inventory.database import Location, open_database, postgres_migrations

TABLES = ("servers", "payloads")
_SQLITE_MIGRATIONS = ((1, """
CREATE TABLE servers (
    id   TEXT PRIMARY KEY,
    url  TEXT NOT NULL,
    seen REAL NOT NULL
);
CREATE TABLE payloads (
    server TEXT NOT NULL,
    name   TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size   INTEGER NOT NULL,
    mtime  REAL NOT NULL,
    PRIMARY KEY (server, name)
)
"""),)
_MIGRATIONS = {"sqlite": _SQLITE_MIGRATIONS,
               "postgresql": postgres_migrations(_SQLITE_MIGRATIONS, integer="BIGINT")}


@dataclass(frozen=True, slots=True, kw_only=True)
class Payload:
    name: str  # path relative to the boot directory
    sha256: str
    size: int
    mtime: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Wanted:
    name: str
    sha256: str
    size: int
    sources: tuple[str, ...]  # HTTP bases of the servers that hold it


class PayloadStore:
    def __init__(self, location: Location) -> None:
        self._db = open_database(location)
        self._db.migrate("payloads", _MIGRATIONS[self._db.dialect])

    def close(self) -> None:
        self._db.close()

    def publish(self, server: str, url: str, files: Iterable[Payload], *, now: float) -> None:
        """Replace what `server` (reached at `url`) holds, in one transaction."""
        db = self._db
        db.begin()
        try:
            db.execute("INSERT INTO servers (id, url, seen) VALUES (?, ?, ?) ON CONFLICT (id) "
                       "DO UPDATE SET url = excluded.url, seen = excluded.seen",
                       (server, url, now))
            db.execute("DELETE FROM payloads WHERE server = ?", (server,))
            db.executemany("INSERT INTO payloads (server, name, sha256, size, mtime) "
                           "VALUES (?, ?, ?, ?, ?)",
                           [(server, f.name, f.sha256, f.size, f.mtime) for f in files])
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def wanted(self, *, exclude: str | None = None) -> dict[str, Wanted]:
        """Each name's newest content, and which servers (but `exclude`) hold it."""
        rows = self._db.execute(
            "SELECT p.name, p.sha256, p.size, p.mtime, p.server, s.url FROM payloads p "
            "JOIN servers s ON s.id = p.server ORDER BY p.name, p.mtime DESC, p.server"
        ).fetchall()
        newest: dict[str, tuple[str, int]] = {}
        sources: dict[str, list[str]] = {}
        for name, sha256, size, _mtime, server, url in rows:
            if name not in newest:
                newest[name] = (sha256, size)
                sources[name] = []
            if newest[name][0] == sha256 and server != exclude:
                sources[name].append(url)
        return {name: Wanted(name=name, sha256=sha, size=size, sources=tuple(sources[name]))
                for name, (sha, size) in newest.items()}
