"""What a DHCP client sends, for tests and benches: one builder for DISCOVER, REQUEST and the
rest, so the in-process benches, the storm client and the service tests send the same
packets (they had four copies)."""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address

from oneroot.net import MacAddress
from oneroot.proto.dhcp import (
    BROADCAST_FLAG,
    BootOp,
    DhcpOptions,
    DhcpPacket,
    Lease,
    LeaseAction,
    LeaseChange,
    MessageType,
    OptionCode,
)

UNSPECIFIED = IPv4Address(0)


def numbered_mac(n: int, prefix: int = 0) -> bytes:
    """A locally administered MAC for client number `n`: 02:<prefix>:00 + `n` in 3 bytes."""
    return bytes((0x02, prefix, 0)) + n.to_bytes(3, "big")


def client_message(mtype: MessageType, *, mac: bytes, xid: int,
                   requested: IPv4Address | None = None, server_id: IPv4Address | None = None,
                   giaddr: IPv4Address = UNSPECIFIED, broadcast: bool = False,
                   prl: bytes | None = None, extra: Mapping[int, bytes] | None = None
                   ) -> DhcpPacket:
    """A client's message: type (53), requested address (50), server id (54), parameter
    request list (55), then `extra` options, in that order."""
    options: dict[int, bytes] = {OptionCode.MESSAGE_TYPE: bytes((mtype,))}
    if requested is not None:
        options[OptionCode.REQUESTED_ADDRESS] = requested.packed
    if server_id is not None:
        options[OptionCode.SERVER_ID] = server_id.packed
    if prl is not None:
        options[OptionCode.PARAMETER_REQUEST_LIST] = prl
    options.update(extra or {})
    return DhcpPacket(op=BootOp.REQUEST, xid=xid, chaddr=mac, giaddr=giaddr,
                      flags=BROADCAST_FLAG if broadcast else 0, options=DhcpOptions(options))


class MemoryLeases:
    """A lease view in memory that applies the responder's lease changes."""

    def __init__(self) -> None:
        self.by_mac: dict[MacAddress, Lease] = {}
        self.declined: dict[IPv4Address, float] = {}

    def lease_for_mac(self, mac: MacAddress) -> Lease | None:
        return self.by_mac.get(mac)

    def lease_for_address(self, address: IPv4Address) -> Lease | None:
        return next((lease for lease in self.by_mac.values() if lease.address == address), None)

    def is_declined(self, address: IPv4Address, now: float) -> bool:
        return self.declined.get(address, 0) > now

    def apply(self, change: LeaseChange | None) -> None:
        if change is None:
            return
        if change.action is LeaseAction.BIND:
            self.by_mac[change.mac] = Lease(mac=change.mac, address=change.address,
                                            node=change.node, expires=change.expires,
                                            state=change.state)
        elif change.action is LeaseAction.RELEASE:
            self.by_mac.pop(change.mac, None)
        else:
            self.declined[change.address] = change.expires
