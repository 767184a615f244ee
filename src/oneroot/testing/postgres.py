"""A real PostgreSQL 15 for tests: `initdb` and `pg_ctl` in a temporary directory, reached
only by a unix socket in that directory (no TCP listener), stopped and deleted afterwards.

`store_at` parametrises a test over both engines: it gives the location of a named store
(`store_at("leases")`): a SQLite file in the test's tmp dir, or a URL to a schema of its own
in the session's PostgreSQL server.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest

from oneroot.inventory.database import Location

POSTGRES_USER = "postgres"  # Debian's postgresql-common creates it; initdb refuses root
DATABASE = "oneroot"


def postgres_bin(tool: str) -> Path:
    """A PostgreSQL server tool: Debian keeps them off PATH, under /usr/lib/postgresql/N/bin."""
    for version in ("15", "16", "17"):
        candidate = Path("/usr/lib/postgresql") / version / "bin" / tool
        if candidate.exists():
            return candidate
    found = shutil.which(tool)
    if found is None:
        raise RuntimeError(f"no {tool}: install postgresql-15 (scripts/install-packages)")
    return Path(found)


class PostgresServer:
    """One throwaway cluster; `url()` names its database, `new_schema_url()` an empty schema
    in it (one per test: cheaper than a database each)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="oneroot-pg-"))
        self.data = self.root / "data"
        self._schemas = itertools.count(1)
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam(POSTGRES_USER)
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._as_user = ["runuser", "-u", POSTGRES_USER, "--"]
        os.chmod(self.root, 0o700)

    def _run(self, *argv: str) -> None:
        # cwd: the postgres user may not enter the caller's directory (a root-owned checkout)
        subprocess.run([*self._as_user, *argv], check=True, capture_output=True, timeout=120,
                       cwd=self.root)

    def start(self) -> None:
        self._run(str(postgres_bin("initdb")), "-D", str(self.data), "-A", "trust",
                  "-U", POSTGRES_USER, "-E", "UTF8", "--locale=C", "--no-sync")
        self.resume()
        self.sql(f"CREATE DATABASE {DATABASE}", database="postgres")

    def resume(self) -> None:
        """Start the server (again, after `pause()`: its data kept)."""
        options = (f"-c listen_addresses='' -c unix_socket_directories={self.root} "
                   "-c fsync=off -c full_page_writes=off -c max_connections=200")
        self._run(str(postgres_bin("pg_ctl")), "-D", str(self.data), "-w", "-t", "60",
                  "-l", str(self.root / "log"), "-o", options, "start")

    def pause(self) -> None:
        """Stop the server as an outage would (connections cut), keeping its data."""
        self._run(str(postgres_bin("pg_ctl")), "-D", str(self.data), "-m", "fast", "-w",
                  "stop")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(postgres_bin("pg_ctl")), "-D", str(self.data), "-m", "immediate",
                      "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, *, database: str = DATABASE, schema: str | None = None) -> str:
        url = f"postgresql://{POSTGRES_USER}@/{database}?host={quote(str(self.root), safe='')}"
        if schema is not None:
            url += "&options=" + quote(f"-csearch_path={schema}", safe="")
        return url

    def sql(self, statement: str, *, database: str = DATABASE) -> None:
        import psycopg

        with psycopg.connect(self.url(database=database), autocommit=True) as conn:
            conn.execute(statement.encode())

    def new_schema_url(self) -> str:
        schema = f"t{next(self._schemas)}"
        self.sql(f"CREATE SCHEMA {schema}")
        return self.url(schema=schema)


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One server for the test session (a schema per test: `store_at`)."""
    with running_postgres() as server:
        yield server


StoreAt = Callable[[str], Location]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_at(request: pytest.FixtureRequest, tmp_path: Path) -> StoreAt:
    """`store_at(name)`: where the store `name` lives for this test, on each engine in turn."""
    if request.param == "sqlite":
        return lambda name: tmp_path / f"{name}.db"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.new_schema_url()
    return lambda name: url
