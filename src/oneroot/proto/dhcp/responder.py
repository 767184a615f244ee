"""The DHCP server's decisions, without IO: request + time + config + leases → `Decision`.

`respond()` says what to send, where, which lease change to persist *before* sending, and
which boot event happened. The caller owns sockets, the clock and the lease database.

Decision table (full mode; proxy mode answers only known PXE clients, with boot info only):
    DISCOVER  known MAC → OFFER fixed address | unknown + discovery → OFFER from pool
              (held in memory for OFFER_HOLD s) | otherwise silent
    REQUEST   selecting (54 present): ours → ACK if the address is the client's, else NAK;
              another server's → forget our offer, silent
              init-reboot (50, no 54, no ciaddr) / renewing, rebinding (ciaddr): ACK if it is
              the client's address; NAK if it is not on the client's segment, if we know the
              client under another one, or if another client holds it; else silent: we have
              no record of it (RFC 2131 §4.3.2). With a view that may miss other servers'
              leases (`view_complete=False`), a pool client's answer the view cannot give
              (silence, a NAK) is `reread` instead: the caller reads that client's and that
              address's rows from the shared store into the view, then decides again.
              A NAK to a REQUEST without 54 (INIT-REBOOT, REBINDING: broadcast, the client's
              server not named) is sent under each identifier the caller holds
              (`named_as`): its own, and a dead peer's service address it took over; a
              client takes a NAK only from the server it chose (udhcpc), and that may be the
              peer's identifier, now this server's (RFC 2131 §4.1). Never under one it does
              not hold: the peer may be alive and answering as itself.
    DECLINE   ours, for a pool address whose bound lease this client holds, and sent by it:
              directly (giaddr 0) only when the frame's Ethernet source (`frame_source`, read
              by the caller from the link layer) is chaddr; relayed only with the option 82
              the lease was bound with → the lease is dropped and the address marked bad for
              DECLINE_HOLD s, silent. Anything else is ignored (chaddr is the sender's choice:
              a DECLINE taken on its word lets any host delete any lease).
    RELEASE   the client's lease is freed, silent
              With `view_complete=False`, a DECLINE or a pool client's RELEASE of a lease the
              view lacks is `reread` first, then decided as above.
    INFORM    known (or discovery on) → ACK with configuration, no address, no lease time
An unknown client on a relayed segment (`NetworkConfig.segments`: relayed from it, or its
ciaddr in it) is decided with that segment's config: its subnet, router and pool. Relayed from
any other segment (giaddr neither in a segment nor in the subnet), it gets nothing
(`Decision.unserved_relay`): the pool's addresses are unusable there.
A known node's fixed address (always in `subnet`) is a reservation on that segment only, as in
Kea and ISC dhcpd: relayed from a giaddr outside `subnet` (a pool segment, or one this server
has no config for), its DISCOVER, REQUEST and INFORM get nothing (`Decision.unserved_node`),
not an address that cannot work there, nor a pool address its root exports would refuse.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from ipaddress import IPv4Address

from oneroot.errors import MalformedPacket
from oneroot.model.cluster import DhcpMode
from oneroot.net import MacAddress
from oneroot.proto.dhcp.config import NetworkConfig, NodeBoot
from oneroot.proto.dhcp.lease import Lease, LeaseAction, LeaseChange, LeaseState, LeaseView
from oneroot.proto.dhcp.options import (
    BROADCAST_FLAG,
    CLIENT_PORT,
    PXE_CLIENT,
    PXE_DISCOVERY_BOOTFILE_ONLY,
    PXE_PORT,
    SERVER_PORT,
    BootOp,
    ClientArch,
    DhcpOptions,
    IpxeSubOption,
    MessageType,
    OptionCode,
    PxeSubOption,
    encode_addresses,
    encode_suboptions,
    encode_u8,
    encode_u32,
)
from oneroot.proto.dhcp.packet import DhcpPacket

OFFER_HOLD = 60.0  # seconds an offered pool address stays reserved for its client
DECLINE_HOLD = 600.0  # seconds a declined address is not handed out
_ZERO = IPv4Address(0)
_BROADCAST = IPv4Address("255.255.255.255")
_PXE_VENDOR_OPTIONS = encode_suboptions(
    [(PxeSubOption.DISCOVERY_CONTROL, encode_u8(PXE_DISCOVERY_BOOTFILE_ONLY))])
_IPXE_ENCAP_OPTIONS = encode_suboptions([(IpxeSubOption.NO_PXEDHCP, encode_u8(1))])
_MESSAGE_TYPE_VALUES = {mtype: encode_u8(mtype) for mtype in MessageType}
# What an unknown client asks of the pool (a RELEASE or DECLINE of a lease it holds is heard)
_POOL_MESSAGES = frozenset((MessageType.DISCOVER, MessageType.REQUEST, MessageType.INFORM))
_REPLY_OPTIONS_KEPT = 1024  # option sets cached per config (PXE clients' UUIDs make many)


class _ConfigOptions:
    """A config's option values, encoded once: `_reply` runs for every OFFER and ACK."""

    __slots__ = ("after_hostname", "before_hostname", "lease_times", "replies", "server_id",
                 "tftp_server_name")

    def __init__(self, config: NetworkConfig) -> None:
        # The order is the order of options not in the client's request list.
        self.before_hostname: dict[int, bytes] = {}
        self.after_hostname: dict[int, bytes] = {}
        self.lease_times: dict[int, bytes] = {}
        if config.mode is not DhcpMode.PROXY:
            self.before_hostname[OptionCode.SUBNET_MASK] = config.subnet.netmask.packed
            if config.router is not None:
                self.before_hostname[OptionCode.ROUTER] = config.router.packed
            if config.dns:
                self.before_hostname[OptionCode.DNS_SERVERS] = encode_addresses(*config.dns)
            if config.domain:
                self.after_hostname[OptionCode.DOMAIN_NAME] = config.domain.encode()
            self.after_hostname[OptionCode.BROADCAST_ADDRESS] = (
                config.subnet.broadcast_address.packed)
            lease_time = config.lease_time
            self.lease_times[OptionCode.LEASE_TIME] = encode_u32(lease_time)
            self.lease_times[OptionCode.RENEWAL_TIME] = encode_u32(lease_time // 2)
            self.lease_times[OptionCode.REBINDING_TIME] = encode_u32(lease_time * 7 // 8)
        self.server_id = config.identifier.packed
        self.tftp_server_name = str(config.server_address).encode()
        # The options of a reply, by what in the request and the decision shapes them: a boot
        # storm's replies differ in a few header fields, not in their options.
        self.replies: dict[tuple[object, ...], DhcpOptions] = {}


# id(config) -> (config, its options). The entry holds the config, so its id is not reused
# while cached; a handful of configs live at once (one per reload), hence the small bound.
_config_options_cache: dict[int, tuple[NetworkConfig, _ConfigOptions]] = {}


def _config_options(config: NetworkConfig) -> _ConfigOptions:
    hit = _config_options_cache.get(id(config))
    if hit is not None and hit[0] is config:
        return hit[1]
    if len(_config_options_cache) >= 8:
        _config_options_cache.clear()
    options = _ConfigOptions(config)
    _config_options_cache[id(config)] = (config, options)
    return options


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownClient:
    """A client that asked for boot service with a MAC no node has."""

    mac: MacAddress
    arch: int | None
    vendor_class: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Destination:
    address: IPv4Address
    port: int
    broadcast: bool  # send as a link-level broadcast on the service's interface


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyEvent:
    kind: str  # "dhcp.offer" | "dhcp.ack" | "dhcp.nak"
    mac: MacAddress
    node: str | None
    address: IPv4Address | None
    file: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    reply: DhcpPacket | None = None
    destination: Destination | None = None
    lease_change: LeaseChange | None = None  # persist before sending the reply
    unknown_client: UnknownClient | None = None  # record as seen
    event: ReplyEvent | None = None
    reason: str = ""  # why there is no reply, for debug logs
    # Read this client's lease and this address's from the shared store, then decide again:
    # the view (`view_complete=False`) has no row that answers this pool client's REQUEST.
    reread: IPv4Address | None = None
    # Relayed from this giaddr, a segment with no pool here: the pool client got nothing;
    # or (`unserved_node`: that node's name) a segment the node's fixed address is not on
    unserved_relay: IPv4Address | None = None
    unserved_node: str | None = None


_TO_ALL_CLIENTS = Destination(address=_BROADCAST, port=CLIENT_PORT, broadcast=True)


Lookup = Callable[[MacAddress], NodeBoot | None]
IsReserved = Callable[[IPv4Address], bool]


def _never_reserved(address: IPv4Address) -> bool:
    return False


def respond(request: DhcpPacket, *, now: float, config: NetworkConfig, lookup: Lookup,
            leases: LeaseView, port: int = SERVER_PORT,
            source: tuple[IPv4Address, int] | None = None,
            is_reserved: IsReserved | None = None,
            frame_source: MacAddress | None = None, view_complete: bool = True) -> Decision:
    """Decide the answer to `request`, received on server `port` from `source`.

    `is_reserved(address)` says an address belongs to a node (never given to pool clients).
    `frame_source` is the Ethernet source of the frame that carried it, where the caller read
    the link layer (None: unknown); a direct DECLINE needs it. `view_complete=False`: `leases`
    may lack leases other servers bound in a shared store (see `Decision.reread`).
    Raises MalformedPacket for a request whose options cannot be read."""
    if request.op is not BootOp.REQUEST:
        return Decision(reason="not a BOOTREQUEST")
    mtype = request.message_type
    if mtype is None:
        return Decision(reason="BOOTP without DHCP message type: not served")
    mac = request.mac
    node = lookup(mac)
    giaddr = request.giaddr
    if node is None:
        if config.segments:
            config = config.segment_of(giaddr, request.ciaddr)
        if giaddr != _ZERO and giaddr not in config.subnet and config.pool is not None \
                and mtype in _POOL_MESSAGES and config.mode is DhcpMode.FULL:
            return Decision(unserved_relay=giaddr,
                            reason=f"relayed from {giaddr}, a segment with no pool here")
    elif giaddr != _ZERO and giaddr not in config.subnet and mtype in _POOL_MESSAGES \
            and config.mode is DhcpMode.FULL:
        # A node's fixed address is in `subnet`: a reservation holds on its own segment only
        # (Kea, ISC dhcpd), and the relay's is another one (a pool segment, or none here).
        return Decision(unserved_relay=giaddr, unserved_node=node.name,
                        reason=f"{node.name} ({node.address}) relayed from {giaddr}, a "
                               f"segment its address is not on")
    ctx = _Context(request, mtype, mac, node, now, config, leases,
                   is_reserved or _never_reserved, view_complete)
    if config.mode is DhcpMode.PROXY:
        return ctx.proxy(port, source)
    if port == PXE_PORT:
        return Decision(reason="port 4011 is served in proxy mode only")
    match mtype:
        case MessageType.DISCOVER:
            return ctx.discover()
        case MessageType.REQUEST:
            return ctx.request_()
        case MessageType.DECLINE:
            return ctx.decline(frame_source)
        case MessageType.RELEASE:
            return ctx.release()
        case MessageType.INFORM:
            return ctx.inform()
        case _:
            return Decision(reason=f"{mtype.name} is a server message")


class NoLeases:
    """A lease view that holds nothing (a server answering one known client, a NAK)."""

    def lease_for_mac(self, mac: MacAddress) -> Lease | None:
        return None

    def lease_for_address(self, address: IPv4Address) -> Lease | None:
        return None

    def is_declined(self, address: IPv4Address, now: float) -> bool:
        return False


def claim_lost_nak(request: DhcpPacket, *, config: NetworkConfig, reason: str) -> Decision:
    """The NAK for a REQUEST whose pool address another server bound first (the lease
    database refused this server's claim): the client starts over with a DISCOVER."""
    ctx = _Context(request, MessageType.REQUEST, request.mac, None, 0.0, config, NoLeases(),
                   _never_reserved)
    return ctx._nak(reason)


def named_as(reply: DhcpPacket, server_id: IPv4Address) -> DhcpPacket:
    """`reply` under another identifier of this server (option 54)."""
    return replace(reply, options=reply.options.replace(OptionCode.SERVER_ID, server_id.packed))


def boot_file(request: DhcpPacket, node: NodeBoot) -> str:
    """iPXE gets the node's script URL (so it never chain-loads itself again); firmware gets
    the loader for its architecture (option 93; absent means BIOS)."""
    arch = request.client_arch
    bios = arch is None or arch == ClientArch.BIOS
    if request.is_ipxe and not (bios and node.bios_pxelinux):
        return node.ipxe_url
    return node.bios_file if bios else node.uefi_file


class _Context:
    """One request being decided; the methods are the rows of the module's table."""

    def __init__(self, request: DhcpPacket, mtype: MessageType, mac: MacAddress,
                 node: NodeBoot | None, now: float, config: NetworkConfig, leases: LeaseView,
                 is_reserved: IsReserved, view_complete: bool = True) -> None:
        self.request = request
        self.mtype = mtype
        self.mac = mac
        self.node = node
        self.now = now
        self.config = config
        self.leases = leases
        self.is_reserved = is_reserved
        self.view_complete = view_complete

    # --- full mode ---

    def discover(self) -> Decision:
        unknown = self._unknown_record()
        if self.node is not None:
            return self._reply(MessageType.OFFER, self.node.address)
        if self.config.pool is None:
            return Decision(unknown_client=unknown, reason="unknown MAC, discovery off")
        address = self._allocate()
        if address is None:
            return Decision(unknown_client=unknown, reason="discovery pool exhausted")
        change = LeaseChange(action=LeaseAction.BIND, mac=self.mac, address=address,
                             expires=self.now + OFFER_HOLD, state=LeaseState.OFFERED)
        return self._reply(MessageType.OFFER, address, change=change, unknown=unknown)

    def request_(self) -> Decision:
        req = self.request
        server_id = req.server_id
        requested = req.requested_address
        if server_id is not None:  # SELECTING
            if not self.config.names_us(server_id):
                lease = self.leases.lease_for_mac(self.mac)
                if lease is not None and lease.state is LeaseState.OFFERED:
                    return Decision(reason="client chose another server",
                                    lease_change=LeaseChange(action=LeaseAction.RELEASE,
                                                             mac=self.mac, address=lease.address))
                return Decision(reason="client chose another server")
            wanted = requested if requested is not None else req.ciaddr
            return self._confirm(wanted, silent_if_unknown=False)
        if requested is not None and req.ciaddr == _ZERO:  # INIT-REBOOT
            return self._confirm(requested, silent_if_unknown=True)
        if req.ciaddr != _ZERO:  # RENEWING or REBINDING
            return self._confirm(req.ciaddr, silent_if_unknown=True)
        return Decision(reason="REQUEST with neither server id, requested address nor ciaddr")

    def _confirm(self, wanted: IPv4Address, *, silent_if_unknown: bool) -> Decision:
        """ACK `wanted` if it is (or may become) the client's address, else NAK or silence."""
        if self.node is not None:
            if wanted == self.node.address:
                return self._ack(wanted)
            return self._nak(f"{wanted} is not the address of node {self.node.name}")
        if self.config.pool is None:
            return Decision(reason="unknown MAC, discovery off")
        lease = self.leases.lease_for_mac(self.mac)
        if lease is not None and lease.address == wanted:
            return self._ack(wanted)
        if self._off_segment(wanted):
            return self._nak(f"{wanted} is not on this network")
        usable = self._pool_usable(wanted)
        if not self.view_complete and silent_if_unknown and (lease is None or not usable):
            return Decision(reread=wanted, reason="not in this server's view of the leases")
        if silent_if_unknown and lease is None:
            holder = self.leases.lease_for_address(wanted)
            if holder is not None and holder.mac != self.mac and holder.expires > self.now:
                return self._nak(f"{wanted} is another client's")
            return Decision(reason="no record of this client")
        if usable:
            return self._ack(wanted)
        return self._nak(f"{wanted} is not available to this client")

    def _off_segment(self, address: IPv4Address) -> bool:
        """`address` is not on the segment the request came from (RFC 2131 §4.3.2: NAK),
        where that segment is known to be the configured subnet: direct, or relayed from it."""
        subnet = self.config.subnet
        giaddr = self.request.giaddr
        return (giaddr == _ZERO or giaddr in subnet) and address not in subnet

    def _ack(self, address: IPv4Address) -> Decision:
        node_name = self.node.name if self.node is not None else None
        change = LeaseChange(action=LeaseAction.BIND, mac=self.mac, address=address,
                             node=node_name, expires=self.now + self.config.lease_time,
                             state=LeaseState.BOUND,
                             relay_info=self.request.relay_agent_info
                             if self.request.giaddr != _ZERO else None)
        return self._reply(MessageType.ACK, address, change=change)

    def decline(self, frame_source: MacAddress | None) -> Decision:
        req = self.request
        if req.server_id is not None and not self.config.names_us(req.server_id):
            return Decision(reason="DECLINE for another server")
        address = req.requested_address
        if address is None:
            return Decision(reason="DECLINE without a requested address")
        pool = self.config.pool
        if pool is None or not pool[0] <= address <= pool[1] or self.is_reserved(address):
            return Decision(reason=f"DECLINE refused: {address} is not a pool address")
        lease = self.leases.lease_for_address(address)
        if lease is None or lease.mac != self.mac or lease.state is not LeaseState.BOUND:
            if not self.view_complete:  # maybe bound by another server: read, then decide
                return Decision(reread=address, reason="not in this server's view")
            return Decision(reason=f"DECLINE refused: {address} is not this client's lease")
        if req.giaddr != _ZERO:
            info = req.relay_agent_info
            if info is None or info != lease.relay_info:
                return Decision(reason="DECLINE refused: relay agent info differs from the "
                                       "lease's")
        elif frame_source != self.mac:
            return Decision(reason=f"DECLINE refused: sent from {frame_source or 'unknown'}, "
                                   f"not from {self.mac}")
        return Decision(reason="address declined",
                        lease_change=LeaseChange(action=LeaseAction.DECLINE, mac=self.mac,
                                                 address=address,
                                                 expires=self.now + DECLINE_HOLD))

    def release(self) -> Decision:
        lease = self.leases.lease_for_mac(self.mac)
        ciaddr = self.request.ciaddr
        if lease is None or lease.address != ciaddr:
            if not self.view_complete and self.node is None and self.config.pool is not None \
                    and ciaddr != _ZERO:  # a pool lease another server bound: read it first
                return Decision(reread=ciaddr, reason="not in this server's view")
            return Decision(reason="RELEASE of an address this client does not hold")
        return Decision(reason="released",
                        lease_change=LeaseChange(action=LeaseAction.RELEASE, mac=self.mac,
                                                 address=lease.address))

    def inform(self) -> Decision:
        if self.node is None and self.config.pool is None:
            return Decision(reason="INFORM from an unknown MAC, discovery off")
        return self._reply(MessageType.ACK, None)

    # --- proxy mode (PXE spec 2.1 §2.2.3: ProxyDHCP on 67 answers DISCOVER, on 4011 REQUEST) ---

    def proxy(self, port: int, source: tuple[IPv4Address, int] | None) -> Decision:
        if not self.request.is_pxe_client:
            return Decision(reason="proxy mode answers PXE clients only")
        if self.node is None:
            return Decision(unknown_client=self._unknown_record(), reason="unknown MAC (proxy)")
        if port == PXE_PORT and self.mtype is MessageType.REQUEST:
            if source is None:
                destination = None
            else:
                destination = Destination(address=source[0], port=source[1], broadcast=False)
            return self._reply(MessageType.ACK, None, destination=destination)
        if port != PXE_PORT and self.mtype is MessageType.DISCOVER:
            return self._reply(MessageType.OFFER, None)
        return Decision(reason=f"proxy mode ignores {self.mtype.name} on port {port}")

    # --- building replies ---

    def _reply(self, mtype: MessageType, address: IPv4Address | None, *,
               change: LeaseChange | None = None, unknown: UnknownClient | None = None,
               destination: Destination | None = None) -> Decision:
        req = self.request
        node = self.node
        static = _config_options(self.config)
        options = req.options
        file_name = boot_file(req, node) if node is not None else None
        pxe = req.is_pxe_client
        # everything `_options` reads: equal keys, equal options
        key = (mtype, address is None, node.name if node is not None else None, file_name,
               options.get(OptionCode.PARAMETER_REQUEST_LIST), pxe, req.is_ipxe,
               options.get(OptionCode.CLIENT_UUID) if pxe else None,
               options.get(OptionCode.RELAY_AGENT_INFO))
        reply_options = static.replies.get(key)
        if reply_options is None:
            if len(static.replies) >= _REPLY_OPTIONS_KEPT:
                static.replies.clear()
            reply_options = static.replies[key] = self._options(mtype, address, file_name,
                                                                static)
        file_bytes = b"" if file_name is None else file_name.encode().rstrip(b"\0")
        # Every field comes from the parsed request or is in range here (file under 128
        # bytes, stored without NULs): no need for the checks of DhcpPacket's __init__
        reply = DhcpPacket._trusted(
            BootOp.REPLY, req.xid, req.htype, req.hlen, 0, 0, req.flags,
            req.ciaddr if mtype is MessageType.ACK else _ZERO,
            address if address is not None else _ZERO,
            self.config.server_address if node is not None else _ZERO,
            req.giaddr, req.chaddr, b"", file_bytes if len(file_bytes) < 128 else b"",
            reply_options)
        event_kind = "dhcp.offer" if mtype is MessageType.OFFER else "dhcp.ack"
        event = ReplyEvent(kind=event_kind, mac=self.mac,
                           node=node.name if node is not None else None,
                           address=address, file=file_name)
        return Decision(reply=reply, destination=destination or self._destination(),
                        lease_change=change, unknown_client=unknown, event=event)

    def _options(self, mtype: MessageType, address: IPv4Address | None, file_name: str | None,
                 static: _ConfigOptions) -> DhcpOptions:
        """The options of a reply, in the order the client asked for them."""
        req = self.request
        node = self.node
        proxy = self.config.mode is DhcpMode.PROXY
        available = static.before_hostname.copy()
        if node is not None and not proxy:
            available[OptionCode.HOSTNAME] = node.name.encode()
        available.update(static.after_hostname)
        if address is not None:
            available.update(static.lease_times)
        if file_name is not None:
            available[OptionCode.TFTP_SERVER_NAME] = static.tftp_server_name
            available[OptionCode.BOOTFILE_NAME] = file_name.encode()
        options = req.options
        if req.is_pxe_client:
            available[OptionCode.VENDOR_CLASS] = PXE_CLIENT
            available[OptionCode.VENDOR_SPECIFIC] = _PXE_VENDOR_OPTIONS
            uuid = options.get(OptionCode.CLIENT_UUID)
            if uuid is not None:
                available[OptionCode.CLIENT_UUID] = uuid
        if not proxy and req.is_ipxe:
            available[OptionCode.IPXE_ENCAP] = _IPXE_ENCAP_OPTIONS

        ordered: dict[int, bytes] = {OptionCode.MESSAGE_TYPE: _MESSAGE_TYPE_VALUES[mtype],
                                     OptionCode.SERVER_ID: static.server_id}
        # RFC 2132 §9.8: in the order requested (a code listed twice is answered once)
        for code in options.get(OptionCode.PARAMETER_REQUEST_LIST, b""):
            value = available.pop(code, None)
            if value is not None:
                ordered[code] = value
        ordered.update(available)
        relay_info = options.get(OptionCode.RELAY_AGENT_INFO)
        if relay_info is not None:  # RFC 3046 §2.2: echoed, last
            ordered[OptionCode.RELAY_AGENT_INFO] = relay_info
        # codes 53, 54, 82 and those of `available`: valid and distinct by construction
        return DhcpOptions._trusted(ordered)

    def _nak(self, reason: str) -> Decision:
        req = self.request
        options = [(OptionCode.MESSAGE_TYPE, encode_u8(MessageType.NAK)),
                   (OptionCode.SERVER_ID, self.config.identifier.packed),
                   (OptionCode.MESSAGE, reason.encode()[:255])]
        if req.relay_agent_info is not None:
            options.append((OptionCode.RELAY_AGENT_INFO, req.relay_agent_info))
        flags = req.flags | BROADCAST_FLAG if req.giaddr != _ZERO else req.flags
        reply = DhcpPacket(op=BootOp.REPLY, xid=req.xid, htype=req.htype, hlen=req.hlen,
                           flags=flags, giaddr=req.giaddr, chaddr=req.chaddr,
                           options=DhcpOptions(options))
        if req.giaddr != _ZERO:
            destination = Destination(address=req.giaddr, port=SERVER_PORT, broadcast=False)
        else:  # RFC 2131 §4.1: a NAK not relayed is always broadcast
            destination = _TO_ALL_CLIENTS
        event = ReplyEvent(kind="dhcp.nak", mac=self.mac,
                           node=self.node.name if self.node is not None else None,
                           address=self.request.requested_address, file=None)
        return Decision(reply=reply, destination=destination, event=event, reason=reason)

    def _destination(self) -> Destination:
        """RFC 2131 §4.1: relay first, then a client that has an address, else broadcast (we
        cannot unicast to an address the client does not hold yet without writing ARP)."""
        req = self.request
        if req.giaddr != _ZERO:
            return Destination(address=req.giaddr, port=SERVER_PORT, broadcast=False)
        if req.ciaddr != _ZERO:
            return Destination(address=req.ciaddr, port=CLIENT_PORT, broadcast=False)
        return _TO_ALL_CLIENTS

    # --- pool ---

    def _unknown_record(self) -> UnknownClient | None:
        if self.node is not None:
            return None
        if self.config.pool is None and not self.request.is_pxe_client:
            return None
        vendor = self.request.vendor_class
        try:
            arch = self.request.client_arch
        except MalformedPacket:
            arch = None
        return UnknownClient(mac=self.mac, arch=arch,
                             vendor_class=None if vendor is None
                             else vendor.decode("ascii", "replace"))

    def _pool_usable(self, address: IPv4Address) -> bool:
        """In the pool, not a node's, not the server's or router's, not declined, and not held
        by another client."""
        pool = self.config.pool
        if pool is None or not pool[0] <= address <= pool[1]:
            return False
        cfg = self.config
        if address in (cfg.server_address, cfg.router, cfg.subnet.network_address,
                       cfg.subnet.broadcast_address) or address not in cfg.subnet:
            return False
        if self.is_reserved(address) or self.leases.is_declined(address, self.now):
            return False
        holder = self.leases.lease_for_address(address)
        return holder is None or holder.mac == self.mac or holder.expires <= self.now

    def _allocate(self) -> IPv4Address | None:
        """The client's current address, else the one it asks for, else the first usable
        address probing from a point hashed from its MAC (dnsmasq's trick: stable per client
        and O(1) while the pool is sparse)."""
        lease = self.leases.lease_for_mac(self.mac)
        if lease is not None and self._pool_usable(lease.address):
            return lease.address
        requested = self.request.requested_address
        if requested is not None and self._pool_usable(requested):
            return requested
        assert self.config.pool is not None
        first, last = (int(a) for a in self.config.pool)
        size = last - first + 1
        if size <= 0:
            return None
        start = int.from_bytes(hashlib.blake2b(self.mac.packed, digest_size=4).digest(), "big")
        for step in range(size):
            candidate = IPv4Address(first + (start + step) % size)
            if self._pool_usable(candidate):
                return candidate
        return None
