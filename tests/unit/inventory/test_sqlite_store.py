"""SqlInventory on a real file: what is applied loads back equal, a plan applies whole or
not at all, and the schema migrates forward only."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from oneroot.errors import ConfigError, Conflict
from oneroot.inventory.database import SqliteDatabase, connect_sqlite
from oneroot.inventory.sqlstore import SqlInventory
from oneroot.model.inventory import Inventory, plan
from oneroot.testing.inventory import make_node, node_mac
from oneroot.testing.postgres import StoreAt


def _store(store_at: StoreAt, inv: Inventory | None = None) -> SqlInventory:
    store = SqlInventory(store_at("inventory"))
    if inv is not None:
        store.apply(plan(Inventory(), inv))
    return store


def test_what_is_applied_loads_back_equal_after_reopening(store_at: StoreAt,
                                                          full: Inventory) -> None:
    store = _store(store_at)
    assert not store.initialized()
    store.apply(plan(Inventory(), full))
    store.close()
    again = SqlInventory(store_at("inventory"))
    assert again.initialized()
    assert again.load() == full
    assert plan(again.load(), full) == []


def test_change_and_remove(store_at: StoreAt, full: Inventory) -> None:
    store = _store(store_at, full)
    nodes = dict(full.nodes)
    del nodes["node02"]
    nodes["node01"] = dataclasses.replace(nodes["node01"], groups=("default",))
    groups = {k: v for k, v in full.groups.items() if k != "plain"}
    new = full.replace(nodes=nodes, groups=groups)
    store.apply(plan(full, new))
    assert store.load() == new


def test_a_plan_applies_whole_or_not_at_all(store_at: StoreAt, full: Inventory) -> None:
    store = _store(store_at, full)
    # node03 is fine; node04 takes node01's MAC, which the database refuses.
    node03 = make_node(3, address="10.9.0.13")
    node04 = dataclasses.replace(make_node(4, address="10.9.0.14"), macs=(node_mac(1),))
    with pytest.raises(Conflict, match="refused the change") as caught:
        store.apply(plan(full, full.with_nodes([node03, node04])))
    assert caught.value.hint
    assert store.load() == full  # node03 was not added either


def test_a_mac_moves_between_nodes_in_one_plan(store_at: StoreAt, full: Inventory) -> None:
    """Removals run first, so a MAC freed by one node can go to a new one in the same plan."""
    store = _store(store_at, full)
    nodes = {k: v for k, v in full.nodes.items() if k != "node01"}
    heir = dataclasses.replace(make_node(5, address="10.9.0.15"), macs=(node_mac(1),))
    new = full.replace(nodes={**nodes, "node05": heir})
    store.apply(plan(full, new))
    assert store.load() == new


def test_a_new_database_gets_the_newest_schema(tmp_path: Path) -> None:
    SqlInventory(tmp_path / "inventory.db").close()
    conn = sqlite3.connect(tmp_path / "inventory.db")
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
    assert version >= 1 and mode == "wal"


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    SqlInventory(tmp_path / "inventory.db").close()
    conn = sqlite3.connect(tmp_path / "inventory.db")
    conn.execute("PRAGMA user_version=999")
    conn.close()
    with pytest.raises(ConfigError, match="schema 999 is newer") as caught:
        SqlInventory(tmp_path / "inventory.db")
    assert caught.value.hint == "upgrade oneroot"


def test_a_failing_migration_leaves_the_database_as_it_was(tmp_path: Path) -> None:
    conn = connect_sqlite(tmp_path / "m.db")
    db = SqliteDatabase(conn)
    db.migrate("m", [(1, "CREATE TABLE a(x)")])
    with pytest.raises(sqlite3.OperationalError):
        db.migrate("m", [(1, "CREATE TABLE a(x)"), (2, "CREATE TABLE b(x);\nNOT SQL")])
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert tables == {"a"}


def test_a_step_another_process_made_meanwhile_is_not_made_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """serve and a CLI open an old file at once: both see version 1; the first to take the
    write lock makes step 2, the other must not ("table b already exists")."""
    migrations = [(1, "CREATE TABLE a(x)"), (2, "CREATE TABLE b(x)")]
    SqliteDatabase(connect_sqlite(tmp_path / "m.db")).migrate("m", migrations[:1])
    db = SqliteDatabase(connect_sqlite(tmp_path / "m.db"))
    other = SqliteDatabase(connect_sqlite(tmp_path / "m.db"))
    begin = db.begin

    def the_other_first() -> None:  # it wins the race between our read and our lock
        monkeypatch.setattr(db, "begin", begin)
        other.migrate("m", migrations)
        begin()

    monkeypatch.setattr(db, "begin", the_other_first)
    db.migrate("m", migrations)
    assert db.conn.execute("PRAGMA user_version").fetchone()[0] == 2
    tables = {row[0] for row in db.conn.execute("SELECT name FROM sqlite_master")}
    assert tables == {"a", "b"}


def test_an_unopenable_path_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot open database") as caught:
        SqlInventory(tmp_path / "file" / "inventory.db")
    assert caught.value.hint and "--home" in caught.value.hint
