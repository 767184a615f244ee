"""The storm's network: a server namespace with a bridge, and one namespace per simulated node.

The server side is a named namespace (`ip netns`) holding `br0` with the server address, where
`oneroot serve` or dnsmasq + nginx run. Each node is a namespace of the load generator's own
(`unshare(CLONE_NEWNET)`, kept by a file descriptor, no name, no mount): its `eth0` is one end
of a veth pair whose other end is a port of `br0`. So every node has its own MAC, its own IP
stack and ARP, and a DHCP broadcast is flooded by the bridge to every port, as on a switch.
When the load generator exits (also when killed) its namespaces, and with them the veth pairs,
are gone; the server namespace is deleted by whoever made it (`server_namespace`).

Why not a named namespace per node: 1,000 `ip netns add` are 1,000 bind mounts to clean up
after a crash, and each socket would need a process (`ip netns exec`) in it; `setns` around
`socket()` lets one asyncio process own every node's sockets. Why not macvlans in one namespace:
the nodes would share one IP stack (one ARP table, one routing table for 1,000 addresses of
one subnet), which no real node does. The bridge takes 1,023 ports (BR_MAX_PORTS): N <= 1,000.
"""

from __future__ import annotations

import ctypes
import fcntl
import ipaddress
import os
import socket
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS = 0x8913, 0x8914
SIOCSIFADDR, SIOCSIFNETMASK = 0x8916, 0x891C
IFF_UP = 0x1
BRIDGE_MAC = "02:00:0a:09:ff:fe"

_libc = ctypes.CDLL(None, use_errno=True)
_HOST = os.open("/proc/self/ns/net", os.O_RDONLY)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def _sysctl(name: str, value: str) -> None:
    Path("/proc/sys", *name.split(".")).write_text(value)


class NodeNetns:
    """A namespace of this process's own, entered only for as long as it takes to make a
    socket or set an address (no `await` inside `entered()`)."""

    def __init__(self) -> None:
        if _libc.unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
        try:
            self.fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            # no IPv6: a real PXE ROM sends no router solicitation, MLD or DAD at power-on
            _sysctl("net.ipv6.conf.default.disable_ipv6", "1")
            _sysctl("net.ipv6.conf.all.disable_ipv6", "1")
        finally:
            _setns(_HOST)

    @property
    def path(self) -> str:
        """A path `ip ... netns PATH` accepts for this namespace."""
        return f"/proc/{os.getpid()}/fd/{self.fd}"

    @contextmanager
    def entered(self) -> Iterator[None]:
        _setns(self.fd)
        try:
            yield
        finally:
            _setns(_HOST)

    def socket(self, family: int, kind: int, proto: int = 0) -> socket.socket:
        with self.entered():
            sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        return sock

    def link_up(self, ifname: str) -> None:
        with self.entered(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            req = struct.pack("16sH14x", ifname.encode(), 0)
            flags = struct.unpack("16sH14x", fcntl.ioctl(sock, SIOCGIFFLAGS, req))[1]
            fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", ifname.encode(),
                                                          flags | IFF_UP))

    def set_address(self, ifname: str, address: ipaddress.IPv4Interface) -> None:
        """What a node does with its lease (the subnet route comes with the netmask)."""
        def ifreq(ip: ipaddress.IPv4Address) -> bytes:
            return struct.pack("16sH2s4s8x", ifname.encode(), socket.AF_INET, b"\0\0", ip.packed)

        with self.entered(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            fcntl.ioctl(sock, SIOCSIFADDR, ifreq(address.ip))
            fcntl.ioctl(sock, SIOCSIFNETMASK, ifreq(address.netmask))

    def close(self) -> None:
        os.close(self.fd)


def plug_nodes(server_ns: str, nodes: list[tuple[NodeNetns, str]]) -> None:
    """One veth pair per node: `eth0` (with the node's MAC) in the node's namespace, the other
    end a port of the server namespace's `br0`. One `ip -batch`, not N processes."""
    lines = [f"link add p{i} master br0 up type veth peer name eth0 address {mac} "
             f"netns {ns.path}\n" for i, (ns, mac) in enumerate(nodes)]
    subprocess.run(["ip", "-n", server_ns, "-batch", "-"], input="".join(lines), text=True,
                   check=True, capture_output=True)
    for ns, _ in nodes:
        ns.link_up("eth0")


NEIGH_THRESHOLDS = ("gc_thresh1", "gc_thresh2", "gc_thresh3")


@contextmanager
def neighbour_table_room(nodes: int) -> Iterator[None]:
    """The kernel's ARP table is one for all namespaces, with a hard cap (gc_thresh3, 1,024 by
    default) on dynamic entries: each node's entry for the server plus the server's entry for
    each node is 2 N, so at N = 1,000 both servers would lose packets to "neighbour table
    overflow". Raised for the run, as a 1,000-node boot server must be, and put back after."""
    base = Path("/proc/sys/net/ipv4/neigh/default")
    saved = {name: (base / name).read_text() for name in NEIGH_THRESHOLDS}
    wanted = (max(128, 2 * nodes), max(512, 4 * nodes), max(1024, 8 * nodes))
    try:
        for name, value in zip(NEIGH_THRESHOLDS, wanted, strict=True):
            if int(saved[name]) < value:
                (base / name).write_text(str(value))
        yield
    finally:
        for name in reversed(NEIGH_THRESHOLDS):
            (base / name).write_text(saved[name])


def ns_cmd(name: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", name, *argv]


def create_server_namespace(name: str, address: ipaddress.IPv4Interface) -> None:
    """`name` with `br0` holding `address`."""
    subprocess.run(["ip", "netns", "add", name], check=True)
    run = [*ns_cmd(name, "sh", "-ec", f"""
        echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6
        echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6
        ip link set lo up
        ip link add br0 address {BRIDGE_MAC} type bridge
        ip addr add {address} dev br0
        ip link set br0 up
    """)]
    subprocess.run(run, check=True, capture_output=True)


def delete_server_namespace(name: str) -> None:
    """The namespace and every process still in it."""
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True,
                          check=False).stdout.split()
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(int(pid), 9)
    subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def delete_stale_server_namespaces(prefix: str) -> None:
    """Those a killed run left (their owner's pid, in the name, is gone)."""
    for path in Path("/run/netns").glob(f"{prefix}*"):
        owner = path.name.removeprefix(prefix)
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            delete_server_namespace(path.name)
