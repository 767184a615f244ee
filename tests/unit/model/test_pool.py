"""A discovery pool that would hand out a server's or the gateway's address is refused where
settings are written (`settings set`: one error line and a hint, nothing written), where a
server applies its own address (`ServerRole.apply`, run by serve at every load), and said by
`oneroot doctor` for an inventory stored before the check."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from oneroot.cli.main import main
from oneroot.errors import InvalidValue
from oneroot.model.haservers import parse_ha_servers
from oneroot.model.inventory import settings_from_dict
from oneroot.model.paths import Paths
from oneroot.model.resolved import resolve_cluster
from oneroot.model.server import ServerRole
from oneroot.ops import doctor
from oneroot.ops.doctor import Host, Level
from oneroot.ops.inventory import open_store

HA = "ha_servers=a:10.0.0.102:10.0.0.2 b:10.0.0.103:10.0.0.3"


def run(home: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["--home", str(home), *args])
    return code, capsys.readouterr().err


@pytest.fixture
def home(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    h = tmp_path / "home"
    assert run(h, capsys, "init", "--server", "10.0.0.1", "--image-root", str(tmp_path))[0] == 0
    assert run(h, capsys, "settings", "set", HA, "gateway=10.0.0.254")[0] == 0
    return h


def settings_text(home: Path) -> str:
    store = open_store(Paths(home=home))
    try:
        return repr(store.load().settings)
    finally:
        store.close()


@pytest.mark.parametrize(("pool", "named"), [
    (("10.0.0.100", "10.0.0.110"), "10.0.0.102, the service address of ha server a"),
    (("10.0.0.3", "10.0.0.9"), "10.0.0.3, the host address of ha server b"),
    (("10.0.0.1", "10.0.0.9"), "10.0.0.1, the server's address"),
    (("10.0.0.200", "10.0.0.254"), "10.0.0.254, the gateway"),
])
def test_settings_set_refuses_a_pool_over_a_server_address(
        home: Path, capsys: pytest.CaptureFixture[str], pool: tuple[str, str],
        named: str) -> None:
    before = settings_text(home)
    code, err = run(home, capsys, "settings", "set", "discovery=true",
                    f"pool_start={pool[0]}", f"pool_end={pool[1]}")
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert lines[0] == f"error: the discovery pool {pool[0]}-{pool[1]} contains {named}"
    assert lines[1].startswith("hint: move the pool off")
    assert settings_text(home) == before


def test_a_pool_beside_the_server_addresses_is_accepted(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(home, capsys, "settings", "set", "discovery=true", "pool_start=10.0.0.104",
               "pool_end=10.0.0.253")[0] == 0


def test_a_server_whose_own_address_is_in_the_pool_is_refused() -> None:
    settings = settings_from_dict({"subnet": "10.0.0.0/24", "server_address": "10.0.0.1",
                                   "pool_start": "10.0.0.100", "pool_end": "10.0.0.200"})
    assert ServerRole(id="x").apply(settings) == settings
    with pytest.raises(InvalidValue) as exc:
        ServerRole(id="x", address=IPv4Address("10.0.0.150")).apply(settings)
    assert "contains 10.0.0.150, the server's address" in str(exc.value)
    assert exc.value.hint


def test_doctor_says_a_stored_pool_overlaps_a_service_address(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = open_store(Paths(home=home))
    try:
        inv = store.load()
    finally:
        store.close()
    s = dataclasses.replace(inv.settings, pool_start=IPv4Address("10.0.0.100"),
                            pool_end=IPv4Address("10.0.0.110"), discovery=True,
                            ha_servers=parse_ha_servers(HA.split("=", 1)[1]))
    found = list(doctor.check_inventory(resolve_cluster(inv.replace(settings=s)), Host()))
    errors = [f for f in found if f.level is Level.ERROR]
    assert [f.message for f in errors] == [
        "the discovery pool 10.0.0.100-10.0.0.110 contains 10.0.0.102, the service address "
        "of ha server a"]
    assert errors[0].fix.startswith("move the pool off")
    assert not [f for f in found if f.level is Level.OK]  # not "consistent" beside it
