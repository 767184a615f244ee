"""The link-layer view of DHCP: who really sent a frame to the server's port.

A DHCP client names itself in `chaddr`, which is whatever the sender writes. A UDP socket
cannot tell more, so a DECLINE (which deletes a lease and quarantines its address) is read
from an AF_PACKET socket instead, which reports each frame's Ethernet source. A classic BPF
filter in the kernel passes only unfragmented IPv4 UDP to the DHCP port, so the socket wakes
for DHCP traffic only, not for every NFS frame on the interface.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

from oneroot.net import MacAddress
from oneroot.proto.dhcp import MessageType, OptionCode

ETH_P_IP = 0x0800
PACKET_OUTGOING = 4  # sockaddr_ll.sll_pkttype of frames this host sent
_SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
_MESSAGE_TYPE = OptionCode.MESSAGE_TYPE
_DECLINE = MessageType.DECLINE
_DECLINE_OPTION = bytes((_MESSAGE_TYPE, 1, _DECLINE))  # option 53, length 1, DHCPDECLINE
_FIRST_OPTION = 240  # in the DHCP message: after the 236-byte BOOTP header and the cookie


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkDatagram:
    payload: bytes  # the UDP payload (the DHCP message)
    source: tuple[str, int]  # IP source address and UDP port
    frame_source: MacAddress  # the Ethernet source address


def _udp_port_filter(port: int) -> bytes:
    """Classic BPF, from the IP header on (SOCK_DGRAM): IPv4 UDP, first fragment only,
    destination `port`, and not a DHCP message whose first option says it is no DECLINE.
    Clients put option 53 first, so every DISCOVER and REQUEST stays in the kernel (the UDP
    socket serves them) instead of waking this socket too; a DECLINE, or a message that
    starts with another option, comes up and `may_be_decline` looks at it."""
    program = [
        (0x30, 0, 0, 9),  # ldb [9]: IP protocol
        (0x15, 0, 9, socket.IPPROTO_UDP),  # jeq UDP, else drop
        (0x28, 0, 0, 6),  # ldh [6]: flags and fragment offset
        (0x45, 7, 0, 0x1FFF),  # jset fragment offset: drop
        (0xB1, 0, 0, 0),  # ldxb 4*([0]&0xf): IP header length
        (0x48, 0, 0, 2),  # ldh [x+2]: UDP destination port
        (0x15, 0, 4, port),  # jeq port, else drop
        (0x50, 0, 0, 8 + _FIRST_OPTION),  # ldb [x+248]: the first option's code
        (0x15, 0, 3, _MESSAGE_TYPE),  # jeq 53, else accept (userspace looks further)
        (0x50, 0, 0, 8 + _FIRST_OPTION + 2),  # ldb [x+250]: the message type
        (0x15, 1, 0, _DECLINE),  # jeq DECLINE: accept
        (0x06, 0, 0, 0),  # ret 0: drop (a packet too short to load from is dropped too)
        (0x06, 0, 0, 0x40000),  # ret: accept the whole frame
    ]
    return b"".join(struct.pack("HBBI", *insn) for insn in program)


def open_link_socket(interface: str, port: int) -> socket.socket:
    """An AF_PACKET socket on `interface` that receives IPv4 UDP datagrams to `port`."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    try:
        code = _udp_port_filter(port)
        buffer = ctypes.create_string_buffer(code)
        prog = struct.pack("HL", len(code) // 8, ctypes.addressof(buffer))
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, prog)
        sock.bind((interface, ETH_P_IP))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def parse_link_datagram(frame: bytes, address: tuple[object, ...], port: int
                        ) -> LinkDatagram | None:
    """The UDP datagram to `port` in `frame` (an IPv4 packet, as a SOCK_DGRAM packet socket
    gives it), with the frame's Ethernet source; None for anything else, or for frames this
    host sent."""
    if len(address) < 5 or address[2] == PACKET_OUTGOING:
        return None
    hardware = address[4]
    if not isinstance(hardware, bytes) or len(hardware) != 6 or len(frame) < 28:
        return None
    if frame[0] >> 4 != 4 or frame[9] != socket.IPPROTO_UDP:
        return None
    header = (frame[0] & 0x0F) * 4
    if header < 20 or len(frame) < header + 8:
        return None
    source_port, destination_port, length = struct.unpack_from("!HHH", frame, header)
    if destination_port != port or length < 8:
        return None
    payload = frame[header + 8:header + length]
    return LinkDatagram(payload=payload,
                        source=(str(IPv4Address(frame[12:16])), source_port),
                        frame_source=MacAddress(hardware))


def may_be_decline(payload: bytes) -> bool:
    """A cheap test before parsing: a DHCPDECLINE carries option 53 as 35 01 04."""
    return _DECLINE_OPTION in payload[_FIRST_OPTION:]
