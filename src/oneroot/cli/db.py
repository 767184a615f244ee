"""`oneroot db show|migrate|join`: where the inventory, leases and events live."""

from __future__ import annotations

import click

from oneroot.cli.output import console, emit_json, plain
from oneroot.cli.state import State, json_option, pass_state
from oneroot.ops import db as db_ops


@click.group()
def db() -> None:
    """Where the inventory, leases and events live (SQLite files or PostgreSQL)."""


@db.command("show")
@json_option
@pass_state
def db_show(state: State, as_json: bool) -> None:
    """Say which database the home uses."""
    info = db_ops.database_info(state.paths)
    if as_json:
        emit_json(info.as_json())
    else:
        console.print(plain(f"{info.engine}: {info.where}"))


@db.command("migrate")
@click.argument("url")
@pass_state
def db_migrate(state: State, url: str) -> None:
    """Copy the home's SQLite inventory, leases and events to the PostgreSQL database URL
    (postgresql://…), then make the home use it. Stop `oneroot serve` first, and start it
    again afterwards: a running server keeps writing to the files it opened."""
    report = db_ops.migrate_home(state.paths, url)
    for table, rows in report.rows.items():
        console.print(plain(f"  {table}: {rows} row(s)"))
    console.print(plain(f"migrated to {report.url} in {report.seconds:.2f} s; the home uses it "
                        "now"))
    if report.kept:
        console.print(plain("the SQLite files are left as they were: "
                            + ", ".join(str(p) for p in report.kept)))


@db.command("join")
@click.argument("url")
@pass_state
def db_join(state: State, url: str) -> None:
    """Make this (new) home use the PostgreSQL database URL that another server's home was
    initialized on (`oneroot init --db URL`): one more `oneroot serve` on one inventory."""
    where = db_ops.join_database(state.paths, url)
    console.print(plain(f"the home uses {where} now"))
