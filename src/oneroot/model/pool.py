"""The discovery pool, checked against the addresses that are never a client's: the servers'
own (each `ha_servers` service and host address, the serving server's address) and the
gateway. A pool that overlaps one of them would hand it to a client, and with `ha_servers` the
client's address would collide with the one keepalived moves to a survivor."""

from __future__ import annotations

from ipaddress import IPv4Address

from oneroot.errors import InvalidValue
from oneroot.model.cluster import Settings


def reserved_addresses(s: Settings) -> list[tuple[IPv4Address, str]]:
    """The addresses a pool must leave out, each with what it is."""
    found = [(s.server_address, "the server's address")]
    if s.gateway is not None:
        found.append((s.gateway, "the gateway"))
    for h in s.ha_servers:
        found += [(h.service, f"the service address of ha server {h.name}"),
                  (h.host, f"the host address of ha server {h.name}")]
    return found


def check_pool(s: Settings) -> None:
    """Refuse a discovery pool that contains a server's or the gateway's address."""
    if s.pool_start is None or s.pool_end is None:
        return
    for address, what in reserved_addresses(s):
        if s.pool_start <= address <= s.pool_end:
            raise InvalidValue(
                f"the discovery pool {s.pool_start}-{s.pool_end} contains {address}, {what}",
                hint="move the pool off the servers' and gateway's addresses (`oneroot "
                     "settings set pool_start=... pool_end=...`), or change ha_servers")
