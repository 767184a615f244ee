"""keepalived's config for the boot servers' service addresses (VRRP only: no IPVS here).

Each boot server has a service address of its own, which its nodes mount from, and one
ganesha instance per address (nfs_server=ganesha-ceph: the instance's recovery nodeid is the
address). Every server runs one keepalived holding one VRRP instance per service address:
at a high priority for its own, a lower one for its peers'. When a server dies, a peer
becomes master of its address and its `notify` command starts that address's ganesha
instance; when the server returns it takes its address back (preemption), and the peer's
`notify` stops the instance there.

    render_keepalived(KeepalivedContext(router_id="boot-a", interface="eth0",
        addresses=(ServiceAddress(name="a", address=IPv4Interface("10.0.0.2/24"), vrid=61,
                                  priority=150), ...), notify="/usr/local/sbin/x"))
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from oneroot.errors import ConfigError
from oneroot.render._env import HEADER

OWN_PRIORITY = 150
PEER_PRIORITY = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceAddress:
    name: str  # the VRRP instance: `oneroot_NAME`
    address: ipaddress.IPv4Interface
    vrid: int  # virtual_router_id, unique on the segment (1-255)
    priority: int  # this server's: OWN_PRIORITY for its own address, PEER_PRIORITY else


@dataclass(frozen=True, slots=True, kw_only=True)
class KeepalivedContext:
    router_id: str
    interface: str
    addresses: tuple[ServiceAddress, ...]
    # Run by keepalived as `NOTIFY INSTANCE oneroot_NAME MASTER|BACKUP|FAULT|STOP PRIORITY`.
    notify: str
    advert_int: int = 1


_SAFE = re.compile(r"[A-Za-z0-9_.:/@+-]+")


def _check(ctx: KeepalivedContext) -> None:
    words = [ctx.router_id, ctx.interface, ctx.notify, *(a.name for a in ctx.addresses)]
    bad = [w for w in words if not _SAFE.fullmatch(w)]
    if bad:
        raise ConfigError(f"keepalived config: {bad[0]!r} is not a plain word or path")
    vrids = [a.vrid for a in ctx.addresses]
    if len(set(vrids)) != len(vrids) or not all(1 <= v <= 255 for v in vrids):
        raise ConfigError(f"keepalived config: VRRP ids must be unique and 1-255: {vrids}")
    if not all(1 <= a.priority <= 254 for a in ctx.addresses):
        raise ConfigError("keepalived config: priorities are 1-254")


def render_keepalived(ctx: KeepalivedContext) -> str:
    _check(ctx)
    lines = [f"# {HEADER}", "# keepalived: VRRP for the boot servers' service addresses.",
             "global_defs {", f"    router_id {ctx.router_id}", "    enable_script_security",
             "    script_user root", "}"]
    for a in ctx.addresses:
        lines += [
            "",
            f"vrrp_instance oneroot_{a.name} {{",
            # BACKUP everywhere: the priority decides, and a server that starts does not
            # claim an address before it has heard its peers.
            "    state BACKUP",
            f"    interface {ctx.interface}",
            f"    virtual_router_id {a.vrid}",
            f"    priority {a.priority}",
            f"    advert_int {ctx.advert_int}",
            "    virtual_ipaddress {",
            f"        {a.address.with_prefixlen} dev {ctx.interface}",
            "    }",
            f'    notify "{ctx.notify}"',
            "}",
        ]
    return "\n".join(lines) + "\n"
