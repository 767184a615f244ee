"""`oneroot init --db`, `inventory export|apply` across engines, and `oneroot db migrate` from a
home's SQLite files to a real PostgreSQL."""

from __future__ import annotations

import json
import stat
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from oneroot.cli.main import main
from oneroot.inventory.database import redact
from oneroot.inventory.events import EventStore
from oneroot.inventory.leases import LeaseStore
from oneroot.model.events import BootEvent
from oneroot.net import MacAddress
from oneroot.proto.dhcp import LeaseAction, LeaseChange, LeaseState, UnknownClient
from oneroot.testing.postgres import PostgresServer

MAC = MacAddress.parse("52:54:00:00:00:01")
STRANGER = MacAddress.parse("52:54:00:00:00:99")


def run(home: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["--home", str(home), *args])
    out, err = capsys.readouterr()
    return code, out, err


def populate(home: Path, image_root: Path, capsys: pytest.CaptureFixture[str],
             *db: str) -> None:
    steps = [["init", "--server", "10.0.0.1", "--image-root", str(image_root), *db],
             ["runlevel", "add", "computenode", "--service", "slurmd"],
             ["group", "add", "compute", "--set", "runlevel=computenode"],
             ["node", "add", "node01", "--mac", str(MAC), "--ip", "10.0.0.11",
              "--group", "compute"],
             ["node", "add", "node02", "--mac", "52:54:00:00:00:02", "--ip", "10.0.0.12"]]
    for step in steps:
        code, _, err = run(home, *step, capsys=capsys)
        assert code == 0, err


def export(home: Path, capsys: pytest.CaptureFixture[str]) -> str:
    code, out, err = run(home, "inventory", "export", capsys=capsys)
    assert code == 0, err
    return out


def apply(home: Path, text: str, capsys: pytest.CaptureFixture[str]) -> str:
    path = home.parent / f"{home.name}.yaml"
    path.write_text(text)
    code, out, err = run(home, "inventory", "apply", str(path), capsys=capsys)
    assert code == 0, err
    return out


def test_export_on_one_engine_applies_on_the_other(
        tmp_path: Path, postgres_server: PostgresServer,
        capsys: pytest.CaptureFixture[str]) -> None:
    lite, pg, back = tmp_path / "lite", tmp_path / "pg", tmp_path / "back"
    populate(lite, tmp_path, capsys)
    from_sqlite = export(lite, capsys)
    code, out, err = run(pg, "init", "--server", "10.0.0.1", "--image-root", str(tmp_path),
                         "--db", postgres_server.new_schema_url(), capsys=capsys)
    assert code == 0, err
    assert "inventory: postgresql://" in out and not (pg / "inventory.db").exists()
    assert "+ node node01" in apply(pg, from_sqlite, capsys)
    from_postgres = export(pg, capsys)
    assert from_postgres == from_sqlite
    assert "no changes" in apply(pg, from_sqlite, capsys)
    populate(back, tmp_path, capsys)  # and back to a SQLite home that differs at first
    run(back, "node", "rm", "node02", "--yes", capsys=capsys)
    apply(back, from_postgres, capsys)
    assert export(back, capsys) == from_sqlite


def test_db_migrate_moves_inventory_leases_and_events(
        tmp_path: Path, postgres_server: PostgresServer,
        capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    populate(home, tmp_path, capsys)
    leases = LeaseStore(home / "leases.db")
    leases.apply(LeaseChange(action=LeaseAction.BIND, mac=MAC, address=IPv4Address("10.0.0.11"),
                             node="node01", expires=1_790_000_000.5, state=LeaseState.BOUND,
                             relay_info=b"\x01\x02"))
    leases.record_unknown(UnknownClient(mac=STRANGER, arch=7, vendor_class="PXEClient"), 5.0)
    leases.close()
    events = EventStore(home / "events.db")
    events.record([BootEvent(time=float(t), kind="stage", node="node01", stage="init")
                   for t in range(1, 6)])
    events.close()
    before = export(home, capsys)
    url = postgres_server.new_schema_url()

    code, out, err = run(home, "db", "migrate", url, capsys=capsys)
    assert code == 0, err
    assert "nodes: 2 row(s)" in out and "events: 5 row(s)" in out and "leases: 1 row(s)" in out
    assert stat.S_IMODE((home / "database.url").stat().st_mode) == 0o600
    code, out, _ = run(home, "db", "show", "--json", capsys=capsys)
    assert json.loads(out) == {"engine": "postgresql", "where": url}
    assert export(home, capsys) == before
    moved = LeaseStore(url)
    lease = moved.lease_for_mac(MAC)
    assert lease is not None and lease.expires == 1_790_000_000.5
    assert lease.relay_info == b"\x01\x02"
    assert [c.mac for c in moved.unknown_clients()] == [STRANGER]
    moved.close()
    moved_events = EventStore(url)
    assert moved_events.count() == 5 and moved_events.status()["node01"].stage == "init"
    moved_events.record([BootEvent(time=9.0, kind="stage", node="node02", stage="init")])
    assert moved_events.count() == 6  # new ids follow the copied ones
    moved_events.close()
    # From now on the home writes to PostgreSQL, and its SQLite file stays as it was.
    sqlite_before = (home / "inventory.db").read_bytes()
    assert run(home, "node", "add", "node03", "--mac", "52:54:00:00:00:03", "--ip",
               "10.0.0.13", capsys=capsys)[0] == 0
    assert "node03" in export(home, capsys)
    assert (home / "inventory.db").read_bytes() == sqlite_before
    code, _, err = run(home, "db", "migrate", url, capsys=capsys)
    assert code != 0 and "already uses" in err and "hint:" in err


def test_db_migrate_into_a_used_database_changes_nothing(
        tmp_path: Path, postgres_server: PostgresServer,
        capsys: pytest.CaptureFixture[str]) -> None:
    url = postgres_server.new_schema_url()
    first, second = tmp_path / "first", tmp_path / "second"
    populate(first, tmp_path, capsys)
    assert run(first, "db", "migrate", url, capsys=capsys)[0] == 0
    populate(second, tmp_path, capsys)
    code, _, err = run(second, "db", "migrate", url, capsys=capsys)
    assert code != 0 and "already holds" in err and "hint:" in err
    assert "Traceback" not in err
    assert not (second / "database.url").exists()
    assert json.loads(run(second, "db", "show", "--json", capsys=capsys)[1])["engine"] == "sqlite"


@pytest.mark.parametrize("args, message", [
    (["--db", "/var/lib/inventory.db"], "takes a postgresql:// URL"),
    (["--db", "postgresql://postgres@/no_such_db?host=/nonexistent"], "cannot connect"),
])
def test_init_with_a_bad_db_writes_nothing(tmp_path: Path, args: list[str], message: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    code, _, err = run(home, "init", "--server", "10.0.0.1", *args, capsys=capsys)
    assert code != 0 and message in err and "hint:" in err and "Traceback" not in err
    assert not (home / "database.url").exists() and not (home / "inventory.db").exists()


def test_a_password_never_reaches_a_message() -> None:
    assert redact("postgresql://oneroot:s3cret@db:5432/x") == "postgresql://oneroot:***@db:5432/x"
    assert redact("postgresql://oneroot@db/x") == "postgresql://oneroot@db/x"
