"""keepalived's config for the boot servers' service addresses (VRRP only: no IPVS here).

Each boot server has a service address of its own, which its nodes mount from, and one
ganesha instance per address (nfs_server=ganesha-ceph: the instance's recovery nodeid is the
address). Every server runs one keepalived holding one VRRP instance per service address:
at a high priority for its own, a lower one for its peers'. When a server dies, a peer
becomes master of its address and its `notify` command starts that address's ganesha
instance; when the server returns it takes its address back (preemption), and the peer's
`notify` stops the instance there.

Peer check: adverts go by unicast from the server's own (host) address to its peers' only,
and `check_unicast_src` makes keepalived drop an advert whose source is not a peer. With
multicast VRRP (keepalived's default, no authentication in VRRPv3), any host on the nodes'
segment could send an advert at priority 254 for a server's VRID and make it drop its
service address: every node's root would hang.

    render_keepalived(keepalived_context(settings, "a", interface="eth0",
                                         notify=("/usr/bin/oneroot", "nfs", "instance",
                                                 "notify")))
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from oneroot.errors import ConfigError
from oneroot.model import Settings
from oneroot.model.haservers import find_ha_server
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
    # Run by keepalived as `NOTIFY... INSTANCE oneroot_NAME MASTER|BACKUP|FAULT|STOP PRIORITY`.
    notify: tuple[str, ...]
    # This server's own address (adverts' source) and its peers' (where adverts go); no
    # peers: multicast, as keepalived's default (and no peer check).
    source: ipaddress.IPv4Address | None = None
    peers: tuple[ipaddress.IPv4Address, ...] = ()
    check_peers: bool = True  # drop adverts from others than `peers` (check_unicast_src)
    advert_int: int = 1


_SAFE = re.compile(r"[A-Za-z0-9_.:/@+-]+")


def _check(ctx: KeepalivedContext) -> None:
    words = [ctx.router_id, ctx.interface, *ctx.notify, *(a.name for a in ctx.addresses)]
    bad = [w for w in words if not _SAFE.fullmatch(w)]
    if bad:
        raise ConfigError(f"keepalived config: {bad[0]!r} is not a plain word or path")
    vrids = [a.vrid for a in ctx.addresses]
    if len(set(vrids)) != len(vrids) or not all(1 <= v <= 255 for v in vrids):
        raise ConfigError(f"keepalived config: VRRP ids must be unique and 1-255: {vrids}")
    if not all(1 <= a.priority <= 254 for a in ctx.addresses):
        raise ConfigError("keepalived config: priorities are 1-254")
    if not ctx.notify:
        raise ConfigError("keepalived config: no notify command")
    if ctx.peers and ctx.source is None:
        raise ConfigError("keepalived config: unicast peers need this server's source address")


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
            *_unicast(ctx),
            f'    notify "{" ".join(ctx.notify)}"',
            "}",
        ]
    return "\n".join(lines) + "\n"


def _unicast(ctx: KeepalivedContext) -> list[str]:
    if not ctx.peers:
        return []
    return [f"    unicast_src_ip {ctx.source}", "    unicast_peer {",
            *(f"        {peer}" for peer in ctx.peers), "    }",
            *(["    check_unicast_src"] if ctx.check_peers else [])]


def keepalived_context(settings: Settings, server: str, *, interface: str,
                       notify: tuple[str, ...]) -> KeepalivedContext:
    """The config of boot server `server` (a name in the setting `ha_servers`): one VRRP
    instance per service address, its own at OWN_PRIORITY, its peers' at PEER_PRIORITY,
    adverts by unicast between the servers' host addresses only."""
    me = find_ha_server(settings.ha_servers, server)
    if len(settings.ha_servers) < 2:
        raise ConfigError("ha_servers names one server: there is no peer to fail over to",
                          hint="add the other servers: ha_servers='a:SERVICE:HOST "
                               "b:SERVICE:HOST'")
    prefix = settings.subnet.prefixlen
    return KeepalivedContext(
        router_id=f"oneroot-{me.name}", interface=interface, notify=notify, source=me.host,
        peers=tuple(s.host for s in settings.ha_servers if s is not me),
        addresses=tuple(ServiceAddress(
            name=s.name, address=ipaddress.IPv4Interface(f"{s.service}/{prefix}"),
            vrid=s.vrid, priority=OWN_PRIORITY if s is me else PEER_PRIORITY)
            for s in settings.ha_servers))
