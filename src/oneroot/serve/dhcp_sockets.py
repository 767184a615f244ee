"""The DHCP service's UDP sockets: the one every datagram on the interface reaches, and one per
peer service address (`ha_servers`) that keepalived may move here; and the peers' identities
this server answers as while it holds their addresses (RFC 2131 §4.1: a server with several
addresses accepts any of them as its identifier, and answers with the one the client chose)."""

from __future__ import annotations

import dataclasses
import socket
import struct
from collections.abc import Callable
from ipaddress import IPv4Address

from oneroot.proto.dhcp import NetworkConfig

_RECEIVE_BUFFER = 4 * 1024 * 1024
_SEND_BUFFER = 1024 * 1024
_SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
_IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
# rtnetlink (linux/netlink.h, linux/rtnetlink.h): one RTM_GETROUTE, as `ip route get` sends
_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope,
# type, flags
_RTATTR = struct.Struct("=HH")  # length, type
_RTM_NEWROUTE, _RTM_GETROUTE = 24, 26
_NLM_F_REQUEST = 1
_RTA_DST = 1
_RTN_LOCAL = 2


def open_dhcp_socket(interface: str, port: int) -> socket.socket:
    """A UDP socket on 0.0.0.0:`port` that only sees and sends on `interface`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, _SO_BINDTODEVICE, interface.encode())
        sock.bind(("0.0.0.0", port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def open_alias_socket(interface: str, address: IPv4Address, port: int) -> socket.socket:
    """A UDP socket on `address`:`port` (a peer's service address, held or not yet:
    IP_FREEBIND): the kernel gives it the datagrams sent to that address (a more specific bind
    than 0.0.0.0), so what arrives on it was sent to the peer's identifier."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_IP, _IP_FREEBIND, 1)
        sock.setsockopt(socket.SOL_SOCKET, _SO_BINDTODEVICE, interface.encode())
        sock.bind((str(address), port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def holds_address(address: IPv4Address) -> bool:
    """This host (its network namespace) has `address` on an interface now: the kernel's
    route to it is of type local (`ip route get ADDRESS` says `local`). Neither a bind test
    (keepalived hosts often set net.ipv4.ip_nonlocal_bind, which lets any address be bound)
    nor the source address of a socket connected to it (a secondary address, as a moved
    service address usually is, is reached from the primary) would do."""
    request = _RTMSG.pack(socket.AF_INET, 32, 0, 0, 0, 0, 0, 0, 0) + \
        _RTATTR.pack(_RTATTR.size + 4, _RTA_DST) + address.packed
    header = _NLMSGHDR.pack(_NLMSGHDR.size + len(request), _RTM_GETROUTE, _NLM_F_REQUEST, 1, 0)
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
            sock.settimeout(1.0)
            sock.send(header + request)
            reply = sock.recv(65536)
    except OSError:  # not known to be held: never answer as another server
        return False
    if len(reply) < _NLMSGHDR.size + _RTMSG.size:
        return False
    kind = _NLMSGHDR.unpack_from(reply)[1]
    route_type = _RTMSG.unpack_from(reply, _NLMSGHDR.size)[7]
    return bool(kind == _RTM_NEWROUTE and route_type == _RTN_LOCAL)  # else an error: no route


class PeerIdentities:
    """The peers' service addresses (`NetworkConfig.peers`) this server answers as while it
    holds them: the config that names a peer's identifier, and whether it is held now (asked
    of the kernel at most every `HELD_TTL` seconds per address: a SELECTING REQUEST naming a
    live peer is the common case in a storm)."""

    HELD_TTL = 1.0

    def __init__(self, holds: Callable[[IPv4Address], bool] = holds_address) -> None:
        self.holds = holds
        self._base: NetworkConfig | None = None
        self._configs: dict[IPv4Address, NetworkConfig] = {}
        self._held: dict[IPv4Address, tuple[bool, float]] = {}

    def config(self, network: NetworkConfig, alias: IPv4Address) -> NetworkConfig:
        """`network` answering as `alias` (its server id)."""
        if network is not self._base:
            self._base, self._configs = network, {}
        config = self._configs.get(alias)
        if config is None:
            segments = tuple(dataclasses.replace(s, server_id=alias) for s in network.segments)
            config = self._configs[alias] = dataclasses.replace(network, server_id=alias,
                                                                peers=(), segments=segments)
        return config

    def named(self, network: NetworkConfig, server_id: IPv4Address | None,
              now: float) -> IPv4Address | None:
        """`server_id` if it is a peer's that this server holds now, else None."""
        if server_id is None or server_id not in network.peers:
            return None
        return server_id if self._is_held(server_id, now) else None

    def held(self, network: NetworkConfig, now: float) -> list[IPv4Address]:
        """The peers' identifiers this server holds now."""
        return [peer for peer in network.peers if self._is_held(peer, now)]

    def _is_held(self, address: IPv4Address, now: float) -> bool:
        held = self._held.get(address)
        if held is None or held[1] <= now:
            held = (self.holds(address), now + self.HELD_TTL)
            self._held[address] = held
        return held[0]
