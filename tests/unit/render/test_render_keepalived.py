"""keepalived's config for the boot servers' service addresses."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from oneroot.errors import ConfigError
from oneroot.render.keepalived import (
    OWN_PRIORITY,
    PEER_PRIORITY,
    KeepalivedContext,
    ServiceAddress,
    render_keepalived,
)


def _ctx(own: str = "a") -> KeepalivedContext:
    return KeepalivedContext(
        router_id=f"boot-{own}", interface="eth0", notify="/usr/local/sbin/oneroot-notify",
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
    {"notify": 'x"; rm -rf /'},
    {"interface": "eth0 lo"},
])
def test_words_that_would_break_the_config_are_refused(change: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        render_keepalived(dataclasses.replace(_ctx(), **change))


def test_duplicate_vrrp_ids_are_refused() -> None:
    ctx = _ctx()
    same = tuple(dataclasses.replace(a, vrid=61) for a in ctx.addresses)
    with pytest.raises(ConfigError, match="unique"):
        render_keepalived(dataclasses.replace(ctx, addresses=same))
