"""keepalived's config for the boot servers' service addresses."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from oneroot.errors import ConfigError, InvalidValue, NotFound
from oneroot.model.inventory import settings_from_dict
from oneroot.render.keepalived import (
    OWN_PRIORITY,
    PEER_PRIORITY,
    KeepalivedContext,
    ServiceAddress,
    keepalived_context,
    render_keepalived,
)

HA = "a:10.0.0.102:10.0.0.2, b:10.0.0.103:10.0.0.3 c:10.0.0.104:10.0.0.4"
NOTIFY = ("/usr/bin/python3", "-m", "oneroot", "--home", "/var/lib/oneroot", "nfs",
          "instance", "notify")


def _ctx(own: str = "a") -> KeepalivedContext:
    return KeepalivedContext(
        router_id=f"boot-{own}", interface="eth0", notify=("/usr/local/sbin/oneroot-notify",),
        addresses=tuple(ServiceAddress(
            name=name, address=ipaddress.IPv4Interface(f"10.0.0.{n}/24"), vrid=60 + n,
            priority=OWN_PRIORITY if name == own else PEER_PRIORITY)
            for name, n in (("a", 2), ("b", 3))))


def test_one_vrrp_instance_per_service_address() -> None:
    text = render_keepalived(_ctx("b"))
    assert text.count("vrrp_instance ") == 2
    a, b = text.split("vrrp_instance oneroot_")[1:]
    assert "10.0.0.2/24 dev eth0" in a and f"priority {PEER_PRIORITY}" in a
    assert "10.0.0.3/24 dev eth0" in b and f"priority {OWN_PRIORITY}" in b
    assert text.count('notify "/usr/local/sbin/oneroot-notify"') == 2
    assert "state MASTER" not in text  # priorities decide
    assert "virtual_server" not in text  # VRRP only: no IPVS here


@pytest.mark.parametrize("change", [
    {"notify": ('x"; rm -rf /',)},
    {"notify": ("/usr/bin/oneroot", "nfs instance")},
    {"notify": ()},
    {"interface": "eth0 lo"},
])
def test_words_that_would_break_the_config_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        render_keepalived(dataclasses.replace(_ctx(), **change))


def test_duplicate_vrrp_ids_are_refused() -> None:
    ctx = _ctx()
    same = tuple(dataclasses.replace(a, vrid=61) for a in ctx.addresses)
    with pytest.raises(ConfigError, match="unique"):
        render_keepalived(dataclasses.replace(ctx, addresses=same))


def test_a_servers_config_from_the_setting_ha_servers() -> None:
    settings = settings_from_dict({"ha_servers": HA, "subnet": "10.0.0.0/24"})
    text = render_keepalived(keepalived_context(settings, "b", interface="eth1",
                                                notify=NOTIFY))
    a, b, c = text.split("vrrp_instance oneroot_")[1:]
    assert "virtual_router_id 51" in a and "10.0.0.102/24 dev eth1" in a
    assert f"priority {OWN_PRIORITY}" in b and "virtual_router_id 52" in b
    assert f"priority {PEER_PRIORITY}" in a and f"priority {PEER_PRIORITY}" in c
    for block in (a, b, c):
        # The peer check: adverts go to the peers' host addresses and come from them only.
        assert "unicast_src_ip 10.0.0.3\n" in block
        assert "unicast_peer {\n        10.0.0.2\n        10.0.0.4\n    }" in block
        assert "    check_unicast_src\n" in block
        assert f'notify "{" ".join(NOTIFY)}"' in block
    # Every server renders the same VRRP ids for the same addresses.
    other = render_keepalived(keepalived_context(settings, "10.0.0.102", interface="eth1",
                                                 notify=NOTIFY))
    assert other.count("virtual_router_id 52") == 1 and "unicast_src_ip 10.0.0.2\n" in other


def test_without_peers_there_is_no_unicast_and_no_check() -> None:
    text = render_keepalived(_ctx())
    assert "unicast" not in text and "check_unicast_src" not in text


@pytest.mark.parametrize(("value", "error"), [
    ("a:10.0.0.102", InvalidValue),  # no host address
    ("a:10.0.0.102:10.0.0.2 a:10.0.0.103:10.0.0.3", InvalidValue),  # a name twice
    ("a:10.0.0.102:10.0.0.2 b:10.0.0.102:10.0.0.3", InvalidValue),  # an address twice
    ("A;x:10.0.0.102:10.0.0.2", InvalidValue),
    ("a:10.0.0.300:10.0.0.2", InvalidValue),
])
def test_bad_ha_servers_are_refused(value: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        settings_from_dict({"ha_servers": value})


def test_an_unknown_server_or_one_without_peers_is_refused() -> None:
    settings = settings_from_dict({"ha_servers": HA})
    with pytest.raises(NotFound, match="no HA server 'd'"):
        keepalived_context(settings, "d", interface="eth0", notify=NOTIFY)
    alone = settings_from_dict({"ha_servers": "a:10.0.0.102:10.0.0.2"})
    with pytest.raises(ConfigError, match="no peer"):
        keepalived_context(alone, "a", interface="eth0", notify=NOTIFY)
