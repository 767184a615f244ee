"""What `oneroot serve` pins: each node's address to its MACs, from one inventory."""

from __future__ import annotations

import ipaddress

from oneroot.model.inventory import Inventory
from oneroot.render.netpin import NodePin, PinContext


def pin_context(inv: Inventory, *, server_address: ipaddress.IPv4Address | None = None,
                nfs_ports: tuple[int, ...] = (2049, 20048)) -> PinContext:
    """The pins for `inv` on its serving interface; `server_address` where serve binds
    another address than the inventory's."""
    s = inv.settings
    return PinContext(
        interface=s.interface, server_address=server_address or s.server_address,
        nodes=tuple(NodePin(name=n.name, address=n.address, macs=n.macs)
                    for _, n in sorted(inv.nodes.items()) if n.macs),
        nfs_ports=nfs_ports)
