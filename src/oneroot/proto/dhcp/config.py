"""What a DHCP server answers with: its network's configuration, and a known node's boot."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from oneroot.model.cluster import DhcpMode

_ZERO = IPv4Address(0)


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkConfig:
    server_address: IPv4Address
    subnet: IPv4Network
    router: IPv4Address | None = None
    dns: tuple[IPv4Address, ...] = ()
    domain: str | None = None
    lease_time: int = 86400
    mode: DhcpMode = DhcpMode.FULL
    pool: tuple[IPv4Address, IPv4Address] | None = None  # discovery pool, inclusive; None: off
    # The server identifier (option 54) when it is not server_address: with `ha_servers`, the
    # service address, which a peer takes over with the server's clients' unicast RENEWs
    server_id: IPv4Address | None = None
    # The other servers' identifiers (their service addresses), which this one answers as
    # while it holds them (the caller decides: `server_id` set to one of them, `peers` ())
    peers: tuple[IPv4Address, ...] = ()
    # Segments behind DHCP relays, each with its subnet, router and pool (setting
    # `relay_pools`): the config that answers their unknown clients
    segments: tuple[NetworkConfig, ...] = ()

    @property
    def identifier(self) -> IPv4Address:
        return self.server_id or self.server_address

    def names_us(self, server_id: IPv4Address) -> bool:
        """A client's option 54 is this server's (its identifier, or its own address)."""
        return server_id in (self.server_address, self.server_id)

    def segment_of(self, giaddr: IPv4Address, ciaddr: IPv4Address) -> NetworkConfig:
        """The config of the relayed segment an unknown client is on: its relay's (giaddr),
        or, not relayed (a unicast RENEW, a RELEASE), the one its address (ciaddr) is in;
        else this one."""
        for segment in self.segments:
            if (giaddr in segment.subnet) if giaddr != _ZERO else (ciaddr in segment.subnet):
                return segment
        return self


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeBoot:
    name: str
    address: IPv4Address
    bios_file: str  # "undionly.kpxe" or "pxelinux.0"
    uefi_file: str  # "ipxe.efi" or "snponly.efi"
    ipxe_url: str  # e.g. "http://10.0.0.1:8080/boot/node01.ipxe"
    # The seed's way on BIOS: pxelinux.0 even when the firmware's PXE stack is iPXE (QEMU's
    # ROM, iPXE-flashed NICs); iPXE then loads pxelinux, which never asks for the script.
    bios_pxelinux: bool = False
