"""Applies the node pins `oneroot serve` keeps on its interface: oneroot's nftables table
(`render.netpin`), a permanent neighbour entry per node, and a neighbour table big enough
for the inventory. Owns those and nothing else: other tables and entries are left alone.

Where the kernel keeps `gc_thresh1/2/3` (they are global, shown only in the initial network
namespace) they are raised, never lowered; inside another namespace they are the host's to
size, and permanent entries do not count against them anyway.
"""

from __future__ import annotations

import ipaddress
import logging
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from oneroot.errors import ExternalToolError
from oneroot.net import MacAddress
from oneroot.render.netpin import (
    PinContext,
    check_ifname,
    neigh_thresholds,
    render_pins,
    render_unpin,
)

log = logging.getLogger(__name__)

NEIGH_SYSCTL = Path("/proc/sys/net/ipv4/neigh/default")
TIMEOUT = 60.0


def run_nft(text: str, *, nft: str = "nft", netns: str | None = None) -> None:
    """`nft -f -` (in `netns` if given): the whole text is one transaction, applied
    entirely or not at all."""
    if shutil.which(nft) is None:
        raise ExternalToolError(f"{nft} not found: oneroot's packet filters need nftables",
                                hint="apt-get install nftables (scripts/install-packages)")
    prefix = ["ip", "netns", "exec", netns] if netns is not None else []
    proc = subprocess.run([*prefix, nft, "-f", "-"], input=text, capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)
    if proc.returncode != 0:
        raise ExternalToolError(f"nft -f failed ({proc.returncode}): {proc.stderr.strip()}",
                                hint="does the interface exist in this network namespace?")


def set_neighbours(interface: str, wanted: dict[ipaddress.IPv4Address, MacAddress],
                   drop: set[ipaddress.IPv4Address]) -> None:
    """Permanent neighbour entries for `wanted`, and `drop`'s removed, in one `ip -batch`."""
    check_ifname(interface)
    lines = [f"neigh replace {ip} lladdr {mac} dev {interface} nud permanent"
             for ip, mac in sorted(wanted.items())]
    lines += [f"neigh del {ip} dev {interface}" for ip in sorted(drop - set(wanted))]
    if not lines:
        return
    proc = subprocess.run(["ip", "-force", "-batch", "-"], input="\n".join(lines) + "\n",
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)
    # `-force` goes on after an error; deleting an entry already gone is not one.
    errors = [e for e in proc.stderr.splitlines()
              if e.strip() and "No such file" not in e and "Command failed" not in e]
    if proc.returncode != 0 and errors:
        raise ExternalToolError(f"ip neigh on {interface} failed: {errors[0]}",
                                hint="does the interface exist in this network namespace?")


def size_neighbour_table(nodes: int, sysctl_dir: Path = NEIGH_SYSCTL
                         ) -> tuple[int, int, int] | None:
    """Raise gc_thresh1/2/3 to fit `nodes`; None where this namespace cannot see them."""
    files = [sysctl_dir / f"gc_thresh{i}" for i in (1, 2, 3)]
    if not all(f.exists() for f in files):
        return None
    current = tuple(int(f.read_text().split()[0]) for f in files)
    wanted = neigh_thresholds(nodes, (current[0], current[1], current[2]))
    if wanted != current:
        # Raise the top first, so that 1 <= 2 <= 3 holds after every write.
        for f, value in reversed(list(zip(files, wanted, strict=True))):
            f.write_text(f"{value}\n")
        log.info("netpin.neigh_sized nodes=%d gc_thresh=%s", nodes, wanted)
    return wanted


@dataclass(slots=True)
class NodePinner:
    """The pins on one interface; `apply()` on every inventory load, `bind()` when DHCP saw
    which of a node's MACs it uses, `remove()` when serve stops."""

    interface: str
    nft: str = "nft"
    sysctl_dir: Path = NEIGH_SYSCTL
    ctx: PinContext | None = None
    bound: dict[ipaddress.IPv4Address, MacAddress] = field(default_factory=dict)
    neighbours: dict[ipaddress.IPv4Address, MacAddress] = field(default_factory=dict)

    def apply(self, ctx: PinContext) -> None:
        if ctx.interface != self.interface:
            raise ExternalToolError(
                f"the pins are on {self.interface}, not {ctx.interface}",
                hint="restart oneroot serve after changing its interface")
        size_neighbour_table(len(ctx.nodes), self.sysctl_dir)
        run_nft(render_pins(ctx), nft=self.nft)
        self.ctx = ctx
        self._neighbours()
        log.info("netpin.applied interface=%s nodes=%d", self.interface, len(ctx.nodes))

    def bind(self, address: ipaddress.IPv4Address, mac: MacAddress) -> None:
        """The node at `address` answered DHCP from `mac`: its neighbour entry says so."""
        if self.bound.get(address) == mac:
            return
        self.bound[address] = mac
        if self.ctx is not None:
            self._neighbours()

    def bind_in_place(self, address: ipaddress.IPv4Address, mac: MacAddress) -> bool:
        """`bind` without IO when the node's entry already names `mac` (every DHCP ACK of a
        boot storm but a MAC change): True. False: call `bind`, which runs `ip neigh`."""
        if self.neighbours.get(address) != mac:
            return False
        self.bound[address] = mac
        return True

    def remove(self) -> None:
        run_nft(render_unpin(), nft=self.nft)
        set_neighbours(self.interface, {}, set(self.neighbours))
        self.neighbours = {}
        self.ctx = None
        log.info("netpin.removed interface=%s", self.interface)

    def _neighbours(self) -> None:
        assert self.ctx is not None
        wanted = {}
        for node in self.ctx.nodes:
            bound = self.bound.get(node.address)
            wanted[node.address] = bound if bound in node.macs else node.macs[0]
        if wanted != self.neighbours:
            changed = {ip: mac for ip, mac in wanted.items() if self.neighbours.get(ip) != mac}
            set_neighbours(self.interface, changed, set(self.neighbours) - set(wanted))
            self.neighbours = wanted
