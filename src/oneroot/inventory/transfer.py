"""Copying the stores' tables from one database to another (`oneroot db migrate`): row by row,
the same columns, into a target that must hold none of them yet."""

from __future__ import annotations

from collections.abc import Sequence

from oneroot.errors import Conflict
from oneroot.inventory.database import Database

BATCH = 1000


def columns(db: Database, table: str) -> list[str]:
    if db.dialect == "sqlite":
        return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
    return [row[0] for row in db.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
        "AND table_schema = current_schema() ORDER BY ordinal_position", (table,))]


def refuse_unless_empty(target: Database, tables: Sequence[str], *, where: str) -> None:
    for table in tables:
        (rows,) = target.execute(f"SELECT count(*) FROM {table}").fetchone()
        if rows:
            raise Conflict(f"{where} already holds {rows} row(s) in {table}",
                           hint="migrate into an empty database (or schema)")


def copy_tables(source: Database, target: Database, tables: Sequence[str]) -> dict[str, int]:
    """Copy every row of `tables` (in order: parents first) inside the caller's transaction on
    `target`; the number of rows of each."""
    copied: dict[str, int] = {}
    for table in tables:
        names = columns(source, table)
        missing = set(names) - set(columns(target, table))
        if missing:
            raise Conflict(f"the target's {table} lacks column(s) {', '.join(sorted(missing))}",
                           hint="upgrade the oneroot that made the target database")
        listed = ", ".join(names)
        insert = (f"INSERT INTO {table} ({listed}) "
                  f"VALUES ({', '.join('?' for _ in names)})")
        rows = source.execute(f"SELECT {listed} FROM {table}").fetchall()
        for start in range(0, len(rows), BATCH):
            target.executemany(insert, [tuple(r) for r in rows[start:start + BATCH]])
        copied[table] = len(rows)
    return copied


def continue_identity(target: Database, table: str, column: str) -> None:
    """After rows came with their ids, make PostgreSQL's next id follow the largest."""
    if target.dialect == "postgresql":
        target.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                       f"coalesce((SELECT max({column}) FROM {table}), 0) + 1, false)")
