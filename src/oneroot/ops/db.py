"""Which database a home uses, and moving a home's SQLite files to PostgreSQL
(`oneroot db show|migrate`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from oneroot.errors import ConfigError, Conflict, InvalidValue
from oneroot.inventory import database, events, leases, sqlstore
from oneroot.inventory.database import Database, open_database
from oneroot.inventory.events import EventStore
from oneroot.inventory.leases import LeaseStore
from oneroot.inventory.sqlstore import SqlInventory
from oneroot.inventory.transfer import continue_identity, copy_tables, refuse_unless_empty
from oneroot.model.paths import Paths


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseInfo:
    engine: str  # "sqlite" or "postgresql"
    where: str  # the home's directory, or the URL without its password

    def as_json(self) -> dict[str, str]:
        return {"engine": self.engine, "where": self.where}


@dataclass(frozen=True, slots=True, kw_only=True)
class MigrationReport:
    url: str  # without its password
    rows: dict[str, int]  # table -> rows copied
    seconds: float
    kept: tuple[Path, ...]  # the SQLite files, left as they were


def database_info(paths: Paths) -> DatabaseInfo:
    url = database.database_url(paths)
    if url is None:
        return DatabaseInfo(engine="sqlite", where=str(paths.home))
    return DatabaseInfo(engine="postgresql", where=database.redact(url))


class _Store(Protocol):
    def close(self) -> None: ...


# A store's SQLite file in the home, its class (opening one migrates its schema), its tables.
Opener = Callable[[database.Location], _Store]


def _stores(paths: Paths) -> list[tuple[Path, Opener, tuple[str, ...]]]:
    return [(paths.inventory_db, SqlInventory, sqlstore.TABLES),
            (paths.leases_db, LeaseStore, leases.TABLES),
            (paths.events_db, EventStore, events.TABLES)]


def _open_and_close(opener: Opener, location: database.Location) -> None:
    """Open a store once (bringing its schema up to date), then close it."""
    opener(location).close()


def migrate_home(paths: Paths, url: str, *, clock: Callable[[], float] = time.monotonic
                 ) -> MigrationReport:
    """Copy the home's inventory, leases and events into the PostgreSQL database at `url` in
    one transaction, check the inventory reads back equal, then point the home at it. The
    SQLite files stay where they were; nothing changes if any step fails."""
    if not database.is_url(url):
        raise InvalidValue(f"expected a postgresql:// URL, not {url!r}",
                           hint="e.g. oneroot db migrate 'postgresql://oneroot@db/oneroot'")
    current = database.database_url(paths)
    if current is not None:
        raise Conflict(f"the home already uses {database.redact(current)}",
                       hint="`oneroot db show` says where it is; there is nothing to migrate")
    if not paths.inventory_db.exists():
        raise ConfigError(f"no inventory at {paths.inventory_db}",
                          hint="run `oneroot init --db URL` to start on PostgreSQL instead")
    start = clock()
    stores = [s for s in _stores(paths) if s[0].exists()]
    for file, opener, _ in stores:
        _open_and_close(opener, file)  # the SQLite side at this oneroot's schema
    for _, opener, _ in _stores(paths):
        _open_and_close(opener, url)  # the PostgreSQL tables, made if missing
    target = open_database(url)
    try:
        rows = _copy_all(target, stores, where=database.redact(url))
    finally:
        target.close()
    _check_inventory(paths.inventory_db, url)
    database.point_home_at(paths, url)
    return MigrationReport(url=database.redact(url), rows=rows, seconds=clock() - start,
                           kept=tuple(file for file, _, _ in stores))


def _copy_all(target: Database, stores: list[tuple[Path, Opener, tuple[str, ...]]], *,
              where: str) -> dict[str, int]:
    rows: dict[str, int] = {}
    target.begin()
    try:
        for file, _, tables in stores:
            refuse_unless_empty(target, tables, where=where)
            source = open_database(file)
            try:
                source.execute("BEGIN")  # one snapshot of each file
                rows.update(copy_tables(source, target, tables))
                source.execute("ROLLBACK")
            finally:
                source.close()
        continue_identity(target, "events", "id")
        target.execute("COMMIT")
    except BaseException:
        if target.in_transaction:
            target.execute("ROLLBACK")
        raise
    return rows


def _check_inventory(file: Path, url: str) -> None:
    before, after = SqlInventory(file), SqlInventory(url)
    try:
        if before.load() != after.load():
            raise Conflict("the inventory read back from PostgreSQL differs from the SQLite one",
                           hint="the home still uses its SQLite files; report this as a bug")
    finally:
        before.close()
        after.close()


def join_database(paths: Paths, url: str) -> str:
    """Point this home at the PostgreSQL database another server's home already uses (one
    more `oneroot serve` on it); the URL, redacted. Refused if the database holds no
    inventory, or if this home has one of its own (SQLite files or another database)."""
    if not database.is_url(url):
        raise InvalidValue(f"expected a postgresql:// URL, not {url!r}",
                           hint="e.g. oneroot db join 'postgresql://oneroot@db/oneroot'")
    current = database.database_url(paths)
    if current is not None and current != url:
        raise Conflict(f"the home already uses {database.redact(current)}",
                       hint="use a home of its own for each server (--home)")
    if paths.inventory_db.exists():
        raise Conflict(f"the home has an inventory of its own ({paths.inventory_db})",
                       hint="`oneroot db migrate URL` moves it; `db join` is for a new home")
    store = SqlInventory(url)
    try:
        if not store.initialized():
            raise ConfigError(f"{database.redact(url)} holds no inventory",
                              hint="run `oneroot init --db URL` on the first server")
    finally:
        store.close()
    database.point_home_at(paths, url)
    return database.redact(url)
