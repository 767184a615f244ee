"""The boot servers that back each other up (setting `ha_servers`): each one's name, the
service address its nodes mount from (which moves to a peer when it dies), and its own host
address on the segment (where its peers' VRRP adverts come from).

    ha_servers = "a:10.0.0.102:10.0.0.2 b:10.0.0.103:10.0.0.3"

Each entry is `NAME:SERVICE:HOST`; entries are separated by spaces or commas. The VRRP id of
an entry is `VRID_BASE` + its position (1-based), the same on every server.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address

from oneroot.errors import InvalidValue, NotFound
from oneroot.model.names import check_name
from oneroot.net import parse_ipv4

VRID_BASE = 50
HINT = "e.g. ha_servers='a:10.0.0.102:10.0.0.2 b:10.0.0.103:10.0.0.3' (NAME:SERVICE:HOST)"


@dataclass(frozen=True, slots=True, kw_only=True)
class HaServer:
    name: str
    service: IPv4Address  # its nodes' NFS server address; the ganesha instance's nodeid
    host: IPv4Address  # its own address, which never moves
    vrid: int  # VRRP virtual_router_id of its service address

    def __str__(self) -> str:
        return f"{self.name}:{self.service}:{self.host}"


def parse_ha_servers(raw: str | Iterable[object] | None) -> tuple[HaServer, ...]:
    """`NAME:SERVICE:HOST` entries (text or a list of them), checked as a whole: names and
    addresses unique, no service address that is also a host address."""
    if raw is None or raw in ("", "none"):
        return ()
    items = raw.replace(",", " ").split() if isinstance(raw, str) else [str(v) for v in raw]
    found: list[HaServer] = []
    for index, item in enumerate(items, start=1):
        parts = item.split(":")
        if len(parts) != 3:
            raise InvalidValue(f"ha_servers entry {item!r} is not NAME:SERVICE:HOST", hint=HINT)
        name, service, host = parts
        found.append(HaServer(name=check_name("server", name),
                              service=parse_ipv4(service, what="service address"),
                              host=parse_ipv4(host, what="host address"),
                              vrid=VRID_BASE + index))
    if len(found) + VRID_BASE > 255:
        raise InvalidValue(f"ha_servers: at most {255 - VRID_BASE} servers", hint=HINT)
    names = [s.name for s in found]
    addresses = [a for s in found for a in (s.service, s.host)]
    if len(set(names)) != len(names) or len(set(addresses)) != len(addresses):
        raise InvalidValue("ha_servers: each name and each address only once", hint=HINT)
    return tuple(found)


def find_ha_server(servers: Iterable[HaServer], which: str) -> HaServer:
    """The entry named `which`, or whose service address is `which`."""
    listed = tuple(servers)
    for server in listed:
        if which in (server.name, str(server.service)):
            return server
    raise NotFound(f"no HA server {which!r} in the setting ha_servers",
                   hint="known: " + (", ".join(str(s) for s in listed) or "none; " + HINT))
