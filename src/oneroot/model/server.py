"""One `oneroot serve` among several on one database: its id, and the segments it serves.

The inventory's settings describe the cluster (subnet, pool, the default server); each server
overrides what is its own: the interface it answers DHCP on, its address on that segment (the
DHCP server id, the TFTP/HTTP address its boot scripts point at), its boot directory, and the
relays (`giaddr`) whose requests it answers. Resolved once when serve starts and applied to
every inventory it loads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import PurePosixPath

from oneroot.errors import InvalidValue
from oneroot.model.cluster import Settings
from oneroot.model.names import check_name
from oneroot.model.pool import check_pool


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerRole:
    id: str | None = None  # recorded with the leases it binds and the events it sees
    interface: str | None = None  # None: the settings' interface
    address: IPv4Address | None = None  # None: the settings' server_address
    boot_dir: PurePosixPath | None = None  # None: the settings' boot_dir
    relays: frozenset[IPv4Address] | None = None  # None: every relay's requests
    peers: tuple[str, ...] = ()  # HTTP bases of other servers (http://host:port)

    def __post_init__(self) -> None:
        if self.id is not None:
            check_name("server", self.id)
        for peer in self.peers:
            if not peer.startswith("http://") or any(c.isspace() for c in peer):
                raise InvalidValue(f"invalid peer {peer!r}",
                                   hint="give another server's HTTP base: http://HOST:PORT")

    def apply(self, settings: Settings) -> Settings:
        """`settings` as this server sees them; InvalidValue if its discovery pool would hand
        out a server's address (`model.pool`)."""
        changes: dict[str, object] = {}
        if self.interface is not None:
            changes["interface"] = self.interface
        address = self._ha_address(settings)
        if address is not None:
            if address not in settings.subnet:
                raise InvalidValue(f"server address {address} is not in the subnet "
                                   f"{settings.subnet}",
                                   hint="give this server's address on the cluster's segment")
            changes["server_address"] = address
        if self.boot_dir is not None:
            changes["boot_dir"] = self.boot_dir
        if changes:
            settings = dataclasses.replace(settings, **changes)  # type: ignore[arg-type]
        check_pool(settings)  # this server's own address may be another than the settings'
        return settings

    def _ha_address(self, settings: Settings) -> IPv4Address | None:
        """This server's address. Among `ha_servers`, a server with an id must be one of them
        and answer on its host address: its nodes then mount from its service address, which
        a peer takes over when it dies (`ops.boot.nfs_server_address`); from any other
        address they would hang with it."""
        if not settings.ha_servers or self.id is None:
            return self.address
        entry = next((h for h in settings.ha_servers if h.name == self.id), None)
        if entry is None:
            raise InvalidValue(
                f"server {self.id!r} is not in the setting ha_servers: its nodes would mount "
                "from an address that no peer takes over when it dies",
                hint="add it (`oneroot settings set ha_servers=...`, NAME:SERVICE:HOST), or "
                     "serve with the --server-id of an entry")
        if self.address not in (None, entry.host):
            raise InvalidValue(
                f"server {self.id!r} answers on {self.address}, but ha_servers gives it the "
                f"host address {entry.host}",
                hint=f"serve with --server-address {entry.host} (or none), or correct "
                     "ha_servers")
        return entry.host


ONE_SERVER = ServerRole()  # the settings as they are: a server alone on its database
