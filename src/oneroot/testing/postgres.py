"""A real PostgreSQL 15 for tests (`oneroot.lab.postgres`: `initdb` and `pg_ctl` in a temporary
directory, reached only by a unix socket in that directory), one per session.

`store_at` parametrises a test over both engines: it gives the location of a named store
(`store_at("leases")`): a SQLite file in the test's tmp dir, or a URL to a schema of its own
in the session's PostgreSQL server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from oneroot.inventory.database import Location
from oneroot.lab.postgres import (
    DATABASE,
    POSTGRES_USER,
    PostgresServer,
    postgres_bin,
    running_postgres,
)

__all__ = ["DATABASE", "POSTGRES_USER", "PostgresServer", "StoreAt", "postgres_bin",
           "postgres_server", "running_postgres", "store_at"]


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
