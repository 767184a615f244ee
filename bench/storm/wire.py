"""What the simulated nodes put on the wire: DHCP in raw IPv4/UDP frames (a node without an
address cannot use a UDP socket), the BPF filter that keeps each node's packet socket to its
own replies, TFTP packets and a minimal HTTP/1.1 exchange. No IO here."""

from __future__ import annotations

import ctypes
import ipaddress
import struct
from dataclasses import dataclass

from oneroot.proto.dhcp import BootOp, MessageType, parse_packet
from oneroot.testing.dhcpmsg import client_message

BROADCAST = ipaddress.IPv4Address("255.255.255.255")
_ZERO = ipaddress.IPv4Address(0)


@dataclass(frozen=True, slots=True, kw_only=True)
class DhcpProfile:
    """Who is asking: the PXE ROM, iPXE, or the initramfs's udhcpc; and how it retries."""

    name: str
    options: dict[int, bytes]
    timeouts: tuple[float, ...]  # one per try: the wait for a reply before sending again


def pxe_rom(arch: int, guid: bytes) -> DhcpProfile:
    """A PXE 2.1 ROM: options 60, 93, 94, 97; retries at 4, 8, 16, 32 s (the PXE spec)."""
    return DhcpProfile(name="pxe", timeouts=(4, 8, 16, 32), options={
        57: struct.pack("!H", 1260),
        55: bytes((1, 2, 3, 4, 5, 6, 11, 12, 13, 15, 16, 17, 18, 22, 23, 28, 40, 41, 42, 43,
                   50, 51, 54, 58, 59, 60, 66, 67, 128, 129, 130, 131, 132, 133, 134, 135)),
        60: f"PXEClient:Arch:{arch:05d}:UNDI:002001".encode(),
        93: struct.pack("!H", arch),
        94: bytes((1, 2, 1)),
        97: b"\0" + guid,
    })


def ipxe(arch: int, guid: bytes, mac: bytes) -> DhcpProfile:
    """iPXE after the chain-load: user class `iPXE`, its feature option 175; retries roughly
    as iPXE's DHCP (1 s, doubling, capped at 10 s)."""
    return DhcpProfile(name="ipxe", timeouts=(1, 2, 4, 8, 10, 10), options={
        57: struct.pack("!H", 1472),
        55: bytes((1, 3, 6, 7, 12, 15, 17, 26, 43, 60, 66, 67, 119, 128, 129, 130, 131, 132,
                   133, 134, 135, 175, 203)),
        60: f"PXEClient:Arch:{arch:05d}:UNDI:002001".encode(),
        61: b"\x01" + mac,
        77: b"iPXE",
        93: struct.pack("!H", arch),
        94: bytes((1, 2, 1)),
        97: b"\0" + guid,
        175: bytes((19, 1, 1, 17, 1, 1, 24, 1, 1)),  # HTTP, PXE, DNS
    })


def udhcpc() -> DhcpProfile:
    """The initramfs's busybox udhcpc (oneroot.dhcp.tries=5, udhcpc's 3 s timeout)."""
    return DhcpProfile(name="udhcpc", timeouts=(3, 3, 3, 3, 3), options={
        57: struct.pack("!H", 576),
        55: bytes((1, 3, 6, 12, 15, 28, 42)),
        60: b"udhcp 1.35.0",
    })


def dhcp_message(profile: DhcpProfile, mtype: MessageType, *, xid: int, mac: bytes,
                 requested: ipaddress.IPv4Address | None = None,
                 server_id: ipaddress.IPv4Address | None = None) -> bytes:
    return client_message(mtype, mac=mac, xid=xid, requested=requested, server_id=server_id,
                          extra=profile.options).to_bytes()


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_frame(payload: bytes, *, src: ipaddress.IPv4Address = _ZERO,
              dst: ipaddress.IPv4Address = BROADCAST, sport: int = 68, dport: int = 67) -> bytes:
    """An IPv4 packet (for a SOCK_DGRAM packet socket: the kernel adds the Ethernet header).
    UDP checksum 0 (none), as PXE ROMs send."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                         src.packed, dst.packed)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + udp


@dataclass(frozen=True, slots=True, kw_only=True)
class DhcpReply:
    mtype: MessageType | None
    xid: int
    address: ipaddress.IPv4Address
    netmask: ipaddress.IPv4Address
    server_id: ipaddress.IPv4Address | None
    next_server: ipaddress.IPv4Address
    boot_file: str


def read_dhcp_reply(ip_packet: bytes) -> DhcpReply | None:
    """The DHCP reply in an IPv4 packet, or None (not UDP to port 68, not a reply)."""
    ihl = (ip_packet[0] & 0x0F) * 4
    if len(ip_packet) < ihl + 8 or ip_packet[9] != 17:
        return None
    if struct.unpack_from("!H", ip_packet, ihl + 2)[0] != 68:
        return None
    try:
        packet = parse_packet(ip_packet[ihl + 8:])
    except ValueError:
        return None
    if packet.op != BootOp.REPLY:
        return None
    opts = packet.options
    server_id = opts.get(54)
    netmask = opts.get(1)
    boot = opts.get(67) or packet.file
    next_server = packet.siaddr
    return DhcpReply(
        mtype=packet.message_type, xid=packet.xid, address=packet.yiaddr,
        netmask=ipaddress.IPv4Address(netmask) if netmask else ipaddress.IPv4Address(
            "255.255.0.0"),
        server_id=ipaddress.IPv4Address(server_id) if server_id else None,
        next_server=next_server, boot_file=boot.rstrip(b"\0").decode())


# Classic BPF, run by the kernel on every frame the bridge floods to the node (every other
# node's broadcast DISCOVER and the server's broadcast replies): pass only UDP to port 68 whose
# chaddr is this node's MAC. Without it the load generator, not the server, would be measured.
_BPF_LD_B_ABS, _BPF_LD_H_ABS, _BPF_LDX_MSH = 0x30, 0x28, 0xB1
_BPF_LD_H_IND, _BPF_LD_W_IND = 0x48, 0x40
_BPF_JEQ, _BPF_JSET, _BPF_RET = 0x15, 0x45, 0x06
SO_ATTACH_FILTER = 26


def reply_filter(mac: bytes) -> list[tuple[int, int, int, int]]:
    """(code, jump-if-true, jump-if-false, k) rows; jumps count rows skipped."""
    high, low = struct.unpack("!IH", mac)
    return [
        (_BPF_LD_B_ABS, 0, 0, 9),          # IP protocol
        (_BPF_JEQ, 0, 10, 17),             # UDP, else drop
        (_BPF_LD_H_ABS, 0, 0, 6),          # flags + fragment offset
        (_BPF_JSET, 8, 0, 0x1FFF),         # a fragment: drop
        (_BPF_LDX_MSH, 0, 0, 0),           # X = IP header length
        (_BPF_LD_H_IND, 0, 0, 2),          # UDP destination port
        (_BPF_JEQ, 0, 5, 68),
        (_BPF_LD_W_IND, 0, 0, 8 + 28),     # chaddr[0:4] (UDP header, then BOOTP offset 28)
        (_BPF_JEQ, 0, 3, high),
        (_BPF_LD_H_IND, 0, 0, 8 + 32),     # chaddr[4:6]
        (_BPF_JEQ, 0, 1, low),
        (_BPF_RET, 0, 0, 0xFFFF),          # pass
        (_BPF_RET, 0, 0, 0),               # drop
    ]


def attach_filter(sock_fd: int, rows: list[tuple[int, int, int, int]],
                  setsockopt: object) -> None:
    """SO_ATTACH_FILTER with a `struct sock_fprog` (the kernel copies the program)."""
    program = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *row) for row in rows))
    fprog = struct.pack("HL", len(rows), ctypes.addressof(program))
    setsockopt(1, SO_ATTACH_FILTER, fprog)  # type: ignore[operator]


# --- TFTP (RFC 1350, 2347-2349) ---

RRQ, DATA, ACK, ERROR, OACK = 1, 3, 4, 5, 6


def tftp_rrq(name: str, options: dict[str, str]) -> bytes:
    parts = [name, "octet"]
    for key, value in options.items():
        parts += [key, value]
    return struct.pack("!H", RRQ) + b"".join(p.encode() + b"\0" for p in parts)


def tftp_ack(block: int) -> bytes:
    return struct.pack("!HH", ACK, block & 0xFFFF)


def tftp_error(code: int, message: str) -> bytes:
    return struct.pack("!HH", ERROR, code) + message.encode() + b"\0"


def tftp_oack_options(packet: bytes) -> dict[str, str]:
    fields = packet[2:].split(b"\0")[:-1]
    return {fields[i].decode().lower(): fields[i + 1].decode()
            for i in range(0, len(fields) - 1, 2)}


# --- HTTP/1.1, what iPXE and busybox wget send ---

def http_request(method: str, host: str, path: str, *, agent: str, body: bytes = b"",
                 content_type: str = "") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"User-Agent: {agent}",
             "Connection: close"]
    if body:
        lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def http_head(raw: bytes) -> tuple[int, int | None]:
    """Status and Content-Length of a response head (without the blank line)."""
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = None
    for line in lines[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == "content-length":
            length = int(value.strip())
    return status, length
