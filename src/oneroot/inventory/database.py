"""Where the inventory, lease and event tables live: one SQLite file each (the embedded
default), or one PostgreSQL database for all three (`oneroot init --db postgresql://…`).

`Database` is the little both engines share: `execute`/`executemany` with `?` parameters (the
PostgreSQL side rewrites them to `%s`), `in_transaction`, and numbered migrations per
component (SQLite: `PRAGMA user_version` of its file; PostgreSQL: the `oneroot_schema` table,
migrated under an advisory lock so two servers starting at once do not both migrate).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from oneroot.errors import ConfigError
from oneroot.model.paths import Paths

if TYPE_CHECKING:
    import psycopg

Dialect = Literal["sqlite", "postgresql"]
Migrations = Sequence[tuple[int, str]]
URL_SCHEMES = ("postgresql://", "postgres://")


class Rows(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Any: ...


class Database:
    """A connection of either engine; `integrity_error` is the engine's constraint error."""

    dialect: Dialect
    integrity_error: type[Exception]
    error: type[Exception]

    def execute(self, sql: str, params: Sequence[object] = ()) -> Rows:
        raise NotImplementedError

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        raise NotImplementedError

    def executemany_counted(self, sql: str, rows: Sequence[Sequence[object]]) -> int | None:
        """`executemany`, and the number of rows it inserted, updated or deleted; None, having
        run nothing, where the engine does not count them (the caller runs the rows one by
        one)."""
        return None

    @property
    def in_transaction(self) -> bool:
        raise NotImplementedError

    def begin(self) -> None:
        """Start a write transaction (SQLite takes its write lock now)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def migrate(self, component: str, migrations: Migrations) -> None:
        raise NotImplementedError

    def listen(self, channel: str) -> bool:
        """Subscribe to `channel`'s notifications; False if this engine has none."""
        return False

    def notifications(self, channel: str) -> int:
        """Notifications on `channel` received since the last call, without waiting."""
        return 0

    def run_script(self, sql: str) -> None:
        for statement in sql.split(";\n"):
            if statement.strip():
                self.execute(statement)


def _check_version(component: str, version: int, migrations: Migrations) -> None:
    newest = migrations[-1][0] if migrations else 0
    if version > newest:
        raise ConfigError(f"{component} schema {version} is newer than this oneroot knows "
                          f"({newest})", hint="upgrade oneroot")


class SqliteDatabase(Database):
    dialect: Dialect = "sqlite"
    integrity_error = sqlite3.IntegrityError
    error = sqlite3.Error

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[object] = ()) -> Rows:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        self.conn.executemany(sql, rows)

    def executemany_counted(self, sql: str, rows: Sequence[Sequence[object]]) -> int | None:
        before = self.conn.total_changes
        self.conn.executemany(sql, rows)
        return self.conn.total_changes - before

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def close(self) -> None:
        self.conn.close()

    def migrate(self, component: str, migrations: Migrations) -> None:
        _check_version(component, self._version(), migrations)
        for number, sql in migrations:
            if number > self._version():
                self.begin()
                try:
                    # Read again under the write lock: another process (serve, a CLI) that
                    # opened the file at the same time may have made this step meanwhile.
                    if number > self._version():
                        self.run_script(sql)
                        self.conn.execute(f"PRAGMA user_version={number}")
                    self.conn.execute("COMMIT")
                except BaseException:
                    self.conn.execute("ROLLBACK")
                    raise

    def _version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])


class PostgresDatabase(Database):
    dialect: Dialect = "postgresql"

    def __init__(self, url: str) -> None:
        import psycopg  # only a PostgreSQL home pays for the import

        self.integrity_error = psycopg.errors.IntegrityError
        self.error = psycopg.Error
        self.url = url
        try:
            self._conn: psycopg.Connection[Any] = psycopg.connect(
                url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        except psycopg.Error as exc:
            raise ConfigError(f"cannot connect to {redact(url)}: {str(exc).strip()}",
                              hint="check the server runs and the URL (host, port, user, "
                                   "database)") from None
        self._sql: dict[str, str] = {}
        self._channels: list[str] = []
        self._reconnected = False

    @property
    def conn(self) -> psycopg.Connection[Any]:
        """The connection, made again if the server closed it (a restart, a network cut):
        the next statement after an outage reconnects; the one that met it raised."""
        if self._conn.closed:
            import psycopg

            self._conn = psycopg.connect(self.url, autocommit=True,
                                         connect_timeout=CONNECT_TIMEOUT)
            for channel in self._channels:
                self._conn.execute(f"LISTEN {channel}".encode())
            self._reconnected = True
        return self._conn

    def _translate(self, sql: str) -> str:
        out = self._sql.get(sql)
        if out is None:
            out = self._sql[sql] = sql.replace("%", "%%").replace("?", "%s")
        return out

    def execute(self, sql: str, params: Sequence[object] = ()) -> Rows:
        if not params:  # sent as it is: psycopg reads placeholders only with parameters
            return self.conn.execute(sql.encode())
        return self.conn.execute(self._translate(sql), params)

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(self._translate(sql), rows)

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        if self._conn.closed:  # its transaction went with it
            return False
        return self._conn.info.transaction_status != TransactionStatus.IDLE

    def begin(self) -> None:
        self.conn.execute("BEGIN")

    def close(self) -> None:
        self._conn.close()

    def listen(self, channel: str) -> bool:
        self.conn.execute(f"LISTEN {channel}".encode())
        self._channels.append(channel)
        return True

    def notifications(self, channel: str) -> int:
        """Also 1 after a reconnection: what was sent meanwhile is lost, reload anyway."""
        conn = self.conn
        missed, self._reconnected = int(self._reconnected), False
        return missed + sum(1 for n in conn.notifies(timeout=0) if n.channel == channel)

    def migrate(self, component: str, migrations: Migrations) -> None:
        self.begin()
        try:
            # One migrator at a time across every server on this database.
            self.conn.execute("SELECT pg_advisory_xact_lock(hashtext('oneroot_schema'))")
            self.conn.execute("CREATE TABLE IF NOT EXISTS oneroot_schema ("
                              "component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
            row = self.conn.execute("SELECT version FROM oneroot_schema WHERE component = %s",
                                    (component,)).fetchone()
            version = row[0] if row else 0
            _check_version(component, version, migrations)
            for number, sql in migrations:
                if number > version:
                    self.run_script(sql)
                    version = number
            self.conn.execute("INSERT INTO oneroot_schema(component, version) VALUES (%s, %s) "
                              "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                              (component, version))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise


CONNECT_TIMEOUT = 5  # seconds; a statement's own wait is the server's business


def postgres_migrations(migrations: Migrations, *, integer: str = "INTEGER") -> Migrations:
    """SQLite migrations in PostgreSQL's types: REAL is 4 bytes there (an epoch time would
    lose its seconds): DOUBLE PRECISION; BLOB is BYTEA; INTEGER becomes `integer`."""
    return tuple((number, sql.replace("REAL", "DOUBLE PRECISION").replace("BLOB", "BYTEA")
                  .replace("INTEGER", integer)) for number, sql in migrations)


def is_url(location: object) -> bool:
    return isinstance(location, str) and location.startswith(URL_SCHEMES)


def redact(url: str) -> str:
    """`url` without its password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    auth, at, host = rest.partition("@")
    if not at or ":" not in auth:
        return url
    return f"{scheme}{sep}{auth.split(':', 1)[0]}:***@{host}"


def connect_sqlite(path: Path) -> sqlite3.Connection:
    """Open a SQLite database the way every oneroot store wants it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(f"cannot open database {path}: {exc}",
                          hint="check the directory exists and is writable (or set --home)"
                          ) from None
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


Location = Path | str  # a SQLite file, or a postgresql:// URL


def open_database(location: Location) -> Database:
    if is_url(location):
        return PostgresDatabase(str(location))
    return SqliteDatabase(connect_sqlite(Path(location)))


# -- which one a home uses --------------------------------------------------------------------


def database_url(paths: Paths) -> str | None:
    """The PostgreSQL URL the home points at, or None (SQLite files in the home)."""
    try:
        text = paths.database_url_file.read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


def point_home_at(paths: Paths, url: str | None) -> None:
    """Make the home use `url` (None: back to its SQLite files). Written 0600 (the URL may
    carry a password), fsynced, renamed."""
    target = paths.database_url_file
    if url is None:
        target.unlink(missing_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, (url + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)


def locate(paths: Paths, sqlite_file: Path) -> Location:
    """Where a store of this home lives: the home's PostgreSQL URL, else `sqlite_file`."""
    return database_url(paths) or sqlite_file


def exists(paths: Paths, sqlite_file: Path) -> bool:
    """The store has been created (a PostgreSQL home: always, its tables are made on open)."""
    return database_url(paths) is not None or sqlite_file.exists()
