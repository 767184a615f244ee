"""The storm's network: a server namespace with a bridge, and one namespace per simulated node.

The switch is a named namespace (`ip netns`) holding the bridge `br0`; the server side another,
whose `eth0` (the server address) is plugged into `br0` and where `oneroot serve` or dnsmasq +
nginx run. Each node is a namespace of the load generator's own (`unshare(CLONE_NEWNET)`, kept
by a file descriptor, no name, no mount): its `eth0` is one end of a veth pair whose other end
is a port of `br0`. So every node has its own MAC, its own IP
stack and ARP, and a DHCP broadcast is flooded by the bridge to every port, as on a switch.
When the load generator exits (also when killed) its namespaces, and with them the veth pairs,
are gone; the switch and server namespaces are deleted by whoever made them.

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

from oneroot.testing.sysctl import raised_sysctls

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS = 0x8913, 0x8914
SIOCSIFADDR, SIOCSIFNETMASK = 0x8916, 0x891C
IFF_UP = 0x1
BRIDGE_MAC = "02:00:0a:09:ff:fe"
SERVER_MAC = "02:00:0a:09:ff:01"

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


def plug_nodes(switch_ns: str, nodes: list[tuple[NodeNetns, str]]) -> None:
    """One veth pair per node: `eth0` (with the node's MAC) in the node's namespace, the other
    end a port of the switch's `br0`. One `ip -batch`, not N processes."""
    lines = [f"link add p{i} master br0 up type veth peer name eth0 address {mac} "
             f"netns {ns.path}\n" for i, (ns, mac) in enumerate(nodes)]
    subprocess.run(["ip", "-n", switch_ns, "-batch", "-"], input="".join(lines), text=True,
                   check=True, capture_output=True)
    # `uplink` merges the server's UDP datagrams of one flow (GRO): every broadcast DHCP reply
    # is one flow, 67 -> 255.255.255.255:68. A port that cannot send a merged packet cuts it
    # back into the server's datagrams; otherwise a node would get its neighbours' replies
    # glued behind the first one's header, and lose its own.
    subprocess.run(ns_cmd(switch_ns, "sh", "-ec", f"""
        for i in $(seq 0 {len(nodes) - 1}); do ethtool -K p$i tx-udp-segmentation off; done
    """), check=True, capture_output=True)
    for ns, _ in nodes:
        ns.link_up("eth0")


@contextmanager
def host_room_for(nodes: int) -> Iterator[None]:
    """Two machine-wide kernel limits that one host simulating N nodes hits, and a real
    network does not, raised for the run and put back after unless another run on the
    machine raised them further meanwhile (`oneroot.testing.sysctl`: never lowered):

    - the ARP table is one for all namespaces, with a hard cap (gc_thresh3, 1,024 by default)
      on dynamic entries: each node's entry for the server plus the server's entry for each
      node is 2 N, so at N = 1,000 both servers would lose packets to "neighbour table
      overflow" (a 1,000-node boot server raises it too);
    - every frame the bridge floods to a veth is queued on one per-CPU backlog
      (netdev_max_backlog, 1,000 by default): one broadcast to N ports queues N frames at
      once, where real NICs each have their own ring.
    """
    wanted = {"net/ipv4/neigh/default/gc_thresh1": max(128, 2 * nodes),
              "net/ipv4/neigh/default/gc_thresh2": max(512, 4 * nodes),
              "net/ipv4/neigh/default/gc_thresh3": max(1024, 8 * nodes),
              "net/core/netdev_max_backlog": max(1000, 100 * nodes)}
    with raised_sysctls(wanted):  # raised only; put back unless another run raised it since
        yield


def ns_cmd(name: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", name, *argv]


def create_network(server_ns: str, switch_ns: str,
                   address: ipaddress.IPv4Interface) -> None:
    """The switch: `br0` alone in `switch_ns`. The server: `eth0` with `address` in
    `server_ns`, a veth whose other end (`uplink`) is a port of `br0`.

    A broadcast the server sends is flooded by the bridge to every node's veth, and each copy
    runs through that node's IP stack: N deliveries, which would run inside the server's own
    sendto() (a veth hands the frame over in the sender's context) and charge a real switch's
    work to the server. `uplink` takes the server's frames through NAPI in a kernel thread of
    its own (GRO on, threaded NAPI), as a switch takes them off the wire: the server pays
    for one frame, the flood still costs the machine's CPUs (shown in the load). A veth uses
    NAPI for a TSO sender's UDP only with UDP GRO forwarding on, hence that feature and the
    ports' `tx-udp-segmentation off` (plug_nodes)."""
    for ns in (switch_ns, server_ns):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(ns_cmd(switch_ns, "sh", "-ec", f"""
        echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6
        echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6
        ip link add br0 address {BRIDGE_MAC} type bridge
        ip link set br0 up
        ip link add uplink master br0 up type veth peer name eth0 address {SERVER_MAC} \
            netns {server_ns}
        ethtool -K uplink gro on rx-udp-gro-forwarding on
        echo 1 > /sys/class/net/uplink/threaded
    """), check=True, capture_output=True)
    subprocess.run(ns_cmd(server_ns, "sh", "-ec", f"""
        echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6
        echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6
        ip link set lo up
        ip addr add {address} dev eth0
        ip link set eth0 up
    """), check=True, capture_output=True)


def delete_namespace(name: str) -> None:
    """The namespace and every process still in it."""
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True,
                          check=False).stdout.split()
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(int(pid), 9)
    subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def delete_stale_namespaces(prefix: str) -> None:
    """Those a killed run left (`PREFIX<kind>-<pid>`: the pid is gone)."""
    for path in Path("/run/netns").glob(f"{prefix}*"):
        owner = path.name.rsplit("-", 1)[-1]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            delete_namespace(path.name)


def drop_counters(server_ns: str, switch_ns: str) -> dict[str, int]:
    """Where packets were lost: the server's UDP receive buffers (Udp RcvbufErrors in its
    namespace), its TCP listen queue (TcpExt ListenOverflows), the switch side of the server's
    link (veth drops: its NAPI ring was full), and the machine's per-CPU backlogs
    (softnet_stat, all namespaces)."""
    snmp = subprocess.run(ns_cmd(server_ns, "cat", "/proc/net/snmp"), capture_output=True,
                          text=True, check=True).stdout.splitlines()
    udp = [line.split()[1:] for line in snmp if line.startswith("Udp:")]
    counters = {"server_udp_rcvbuf_errors": int(dict(zip(*udp, strict=True))["RcvbufErrors"])}
    netstat = subprocess.run(ns_cmd(server_ns, "cat", "/proc/net/netstat"), capture_output=True,
                             text=True, check=True).stdout.splitlines()
    tcp_ext = [line.split()[1:] for line in netstat if line.startswith("TcpExt:")]
    # connections lost to a full listen queue (the HTTP server's backlog)
    counters["server_listen_overflows"] = int(dict(zip(*tcp_ext, strict=True))["ListenOverflows"])
    for name, ns, dev in (("uplink", switch_ns, "uplink"), ("server_eth0", server_ns, "eth0")):
        text = subprocess.run(ns_cmd(ns, "cat", "/proc/net/dev"), capture_output=True,
                              text=True, check=True).stdout
        for line in text.splitlines():
            if line.strip().startswith(f"{dev}:"):
                fields = line.split(":", 1)[1].split()
                counters[f"{name}_rx_drop"] = int(fields[3])
                counters[f"{name}_tx_drop"] = int(fields[11])
    counters["softnet_dropped"] = sum(int(line.split()[1], 16) for line in
                                      Path("/proc/net/softnet_stat").read_text().splitlines())
    return counters
