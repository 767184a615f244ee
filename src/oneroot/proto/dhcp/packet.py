"""The DHCP packet codec: `parse_packet(bytes) -> DhcpPacket` and `DhcpPacket.to_bytes()`.

Layout (RFC 2131 §2): a 236-byte BOOTP header, the magic cookie, then options. Long options
come as several instances of one code and are concatenated on decode (RFC 3396); option 52
(overload) lets `file` and `sname` carry options too, read in the order options, file, sname.
A parsed packet never contains option 52: its `file`/`sname` are empty when they held options.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, fields
from ipaddress import IPv4Address

from oneroot.errors import LocalProtocolError, MalformedPacket
from oneroot.net import MacAddress
from oneroot.proto.dhcp.options import (
    BROADCAST_FLAG,
    IPXE_USER_CLASS,
    MAGIC_COOKIE,
    PXE_CLIENT,
    BootOp,
    DhcpOptions,
    MessageType,
    OptionCode,
    Overload,
    decode_address,
    decode_u8,
    decode_u16,
)

_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
HEADER_SIZE = _HEADER.size  # 236
_MIN_PACKET = 300  # BOOTP's minimum; some PXE ROMs drop shorter replies
_MIN_MAX_MESSAGE = 576  # RFC 2132 §9.10: every client accepts this much (IP + UDP + DHCP)
_IP_UDP_HEADERS = 28
_ZERO = IPv4Address(0)
_ZERO_PACKED = bytes(4)
_BOOT_OPS = {int(op): op for op in BootOp}
_MESSAGE_TYPES = {int(mtype): mtype for mtype in MessageType}
# option 77 as iPXE sends it (raw), and RFC 3004-framed
_IPXE_USER_CLASSES = (IPXE_USER_CLASS, bytes((len(IPXE_USER_CLASS),)) + IPXE_USER_CLASS)


def _address(packed: bytes) -> IPv4Address:
    # Most header addresses of a request are 0.0.0.0: share one object for them.
    return _ZERO if packed == _ZERO_PACKED else IPv4Address(packed)


def _packed(address: IPv4Address) -> bytes:
    return _ZERO_PACKED if address is _ZERO else address.packed


@dataclass(frozen=True, slots=True, kw_only=True)
class DhcpPacket:
    """One BOOTP/DHCP message. `sname` and `file` are stored without their NUL padding."""

    op: BootOp
    xid: int
    htype: int = 1
    hlen: int = 6
    hops: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: IPv4Address = _ZERO
    yiaddr: IPv4Address = _ZERO
    siaddr: IPv4Address = _ZERO
    giaddr: IPv4Address = _ZERO
    chaddr: bytes = b""
    sname: bytes = b""
    file: bytes = b""
    options: DhcpOptions = field(default_factory=DhcpOptions)

    def __post_init__(self) -> None:
        chaddr = self.chaddr
        if len(chaddr) != 16:
            if len(chaddr) > 16:
                raise LocalProtocolError("chaddr is at most 16 bytes")
            object.__setattr__(self, "chaddr", chaddr.ljust(16, b"\0"))
        sname, file = self.sname, self.file
        if sname or file:
            if len(sname) > 64 or len(file) > 128:
                raise LocalProtocolError("sname is at most 64 bytes and file at most 128")
            if sname.endswith(b"\0") or file.endswith(b"\0"):
                raise LocalProtocolError("sname and file are stored without trailing NULs")
        if not (0 <= self.xid < 2**32 and 0 <= self.secs < 2**16 and 0 <= self.flags < 2**16
                and 0 <= self.htype < 256 and 0 <= self.hlen <= 16 and 0 <= self.hops < 256):
            raise LocalProtocolError("a BOOTP header field is out of range")
        if type(self.options) is not DhcpOptions and not isinstance(self.options, DhcpOptions):
            object.__setattr__(self, "options", DhcpOptions(self.options))

    @classmethod
    def _trusted(cls, op: BootOp, xid: int, htype: int, hlen: int, hops: int, secs: int,
                 flags: int, ciaddr: IPv4Address, yiaddr: IPv4Address, siaddr: IPv4Address,
                 giaddr: IPv4Address, chaddr: bytes, sname: bytes, file: bytes,
                 options: DhcpOptions) -> DhcpPacket:
        """A packet from fields already valid (what `__post_init__` checks: a 16-byte chaddr,
        sname and file in size without trailing NULs, header fields in range, a
        `DhcpOptions`), without checking them again: for the codec, which unpacked them from
        their fields, and the responder, which copies them from a parsed request. A frozen
        dataclass's `__init__` sets each field through `object.__setattr__` and then checks
        them; this is ~2.4x cheaper, and runs for every datagram and every reply."""
        packet = object.__new__(cls)
        for set_field, value in zip(_FIELD_SETTERS, (
                op, xid, htype, hlen, hops, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr,
                sname, file, options), strict=True):
            set_field(packet, value)
        return packet

    # --- typed views of the header ---

    @property
    def mac(self) -> MacAddress:
        if self.htype != 1 or self.hlen != 6:
            raise MalformedPacket(f"not an Ethernet client (htype {self.htype}, hlen {self.hlen})")
        return MacAddress(self.chaddr[:6])

    @property
    def broadcast(self) -> bool:
        return bool(self.flags & BROADCAST_FLAG)

    # --- typed views of the options; a present but malformed option raises MalformedPacket ---

    @property
    def message_type(self) -> MessageType | None:
        raw = self.options.get(OptionCode.MESSAGE_TYPE)
        if raw is None:
            return None
        value = decode_u8(OptionCode.MESSAGE_TYPE, raw)
        mtype = _MESSAGE_TYPES.get(value)
        if mtype is None:
            raise MalformedPacket(f"unknown DHCP message type {value}")
        return mtype

    def _address(self, code: OptionCode) -> IPv4Address | None:
        raw = self.options.get(code)
        return None if raw is None else decode_address(code, raw)

    @property
    def requested_address(self) -> IPv4Address | None:
        return self._address(OptionCode.REQUESTED_ADDRESS)

    @property
    def server_id(self) -> IPv4Address | None:
        return self._address(OptionCode.SERVER_ID)

    @property
    def parameter_request_list(self) -> tuple[int, ...]:
        return tuple(self.options.get(OptionCode.PARAMETER_REQUEST_LIST, b""))

    @property
    def max_message_size(self) -> int | None:
        raw = self.options.get(OptionCode.MAX_MESSAGE_SIZE)
        return None if raw is None else decode_u16(OptionCode.MAX_MESSAGE_SIZE, raw)

    @property
    def vendor_class(self) -> bytes | None:
        return self.options.get(OptionCode.VENDOR_CLASS)

    @property
    def is_pxe_client(self) -> bool:
        return (self.vendor_class or b"").startswith(PXE_CLIENT)

    @property
    def user_class(self) -> bytes | None:
        return self.options.get(OptionCode.USER_CLASS)

    @property
    def is_ipxe(self) -> bool:
        """iPXE sends user class `iPXE` raw (not RFC 3004-framed); accept both forms."""
        return self.options.get(OptionCode.USER_CLASS) in _IPXE_USER_CLASSES

    @property
    def client_arch(self) -> int | None:
        """The first architecture of option 93 (a list of 16-bit types)."""
        raw = self.options.get(OptionCode.CLIENT_ARCH)
        if raw is None:
            return None
        if not raw or len(raw) % 2:
            raise MalformedPacket(f"option 93 must be a list of 16-bit types, got {len(raw)} bytes")
        return int.from_bytes(raw[:2], "big")

    @property
    def client_id(self) -> bytes | None:
        return self.options.get(OptionCode.CLIENT_ID)

    @property
    def client_uuid(self) -> bytes | None:
        return self.options.get(OptionCode.CLIENT_UUID)

    @property
    def relay_agent_info(self) -> bytes | None:
        return self.options.get(OptionCode.RELAY_AGENT_INFO)

    @property
    def hostname(self) -> str | None:
        raw = self.options.get(OptionCode.HOSTNAME)
        return None if raw is None else raw.rstrip(b"\0").decode("ascii", "replace")

    # --- encoding ---

    def to_bytes(self, *, max_size: int | None = None) -> bytes:
        """Encode. With `max_size` (the peer's option 57, IP and UDP headers included), options
        that do not fit spill into empty `file`/`sname` fields via option 52; a packet that
        would not fit even so is sent whole (the peer's size is a hint, an answer is better)."""
        options = self.options
        main = options._wire
        if main is None:  # options are immutable: a set the responder reuses is encoded once
            main = b"".join(_encode_options(options))
            object.__setattr__(options, "_wire", main)
        # Under 576 bytes every client takes the packet whole: the common case skips the sums.
        if max_size is not None and len(main) > _MIN_MAX_MESSAGE - _FIXED_SIZE:
            budget = max(max_size, _MIN_MAX_MESSAGE) - _IP_UDP_HEADERS
            if HEADER_SIZE + len(MAGIC_COOKIE) + len(main) + 1 > budget:
                overloaded = _overload(_encode_options(options), budget, self.file, self.sname)
                if overloaded is not None:
                    return self._pack(*overloaded)
        return self._pack(main, self.file, self.sname)

    def _pack(self, main: bytes, file: bytes, sname: bytes) -> bytes:
        header = _HEADER.pack(
            self.op, self.htype, self.hlen, self.hops, self.xid, self.secs, self.flags,
            _packed(self.ciaddr), _packed(self.yiaddr), _packed(self.siaddr),
            _packed(self.giaddr), self.chaddr, sname, file,
        )
        data = b"".join((header, MAGIC_COOKIE, main, b"\xff"))
        if len(data) < _MIN_PACKET:
            return data + bytes(_MIN_PACKET - len(data))
        return data


# The slots' setters, in `_trusted`'s argument order (the dataclass's field order)
_FIELD_SETTERS = tuple(DhcpPacket.__dict__[f.name].__set__ for f in fields(DhcpPacket))

# IP and UDP headers, BOOTP header, cookie and END: what a packet costs besides its options.
_FIXED_SIZE = _IP_UDP_HEADERS + HEADER_SIZE + len(MAGIC_COOKIE) + 1


def _encode_options(options: DhcpOptions) -> list[bytes]:
    """One chunk per option instance; values over 255 bytes become several (RFC 3396)."""
    chunks: list[bytes] = []
    append = chunks.append
    for code, value in options.items():
        size = len(value)
        if size <= 255:
            append(bytes((code, size)) + value)
            continue
        for start in range(0, size, 255):
            piece = value[start : start + 255]
            append(bytes((code, len(piece))) + piece)
    return chunks


def _overload(chunks: list[bytes], budget: int, file: bytes, sname: bytes
              ) -> tuple[bytes, bytes, bytes] | None:
    """Pack chunks, in order, into options (keeping 3 bytes for option 52), then whichever of
    file and sname are empty. None when they still do not fit."""
    areas: list[tuple[Overload | None, int]] = [
        (None, budget - HEADER_SIZE - len(MAGIC_COOKIE) - 3 - 1)]
    if not file:
        areas.append((Overload.FILE, 128 - 1))
    if not sname:
        areas.append((Overload.SNAME, 64 - 1))
    filled: list[bytearray] = [bytearray() for _ in areas]
    area = 0
    used = Overload(0)
    for chunk in chunks:
        while area < len(areas) and len(filled[area]) + len(chunk) > areas[area][1]:
            area += 1
        if area == len(areas):
            return None
        filled[area] += chunk
        flag = areas[area][0]
        if flag is not None:
            used |= flag
    if not used:
        return None
    out_main = bytes((OptionCode.OVERLOAD, 1, int(used))) + bytes(filled[0])
    out_file, out_sname = file, sname
    for (flag, _), data in zip(areas[1:], filled[1:], strict=True):
        if flag is Overload.FILE and used & Overload.FILE:
            out_file = bytes(data) + b"\xff"
        elif flag is Overload.SNAME and used & Overload.SNAME:
            out_sname = bytes(data) + b"\xff"
    return out_main, out_file, out_sname


def _read_options(area: bytes, into: dict[int, bytes], where: str, start: int = 0) -> None:
    """Append each option of `area[start:]` to `into` (repeated codes concatenate, RFC 3396)."""
    i = start
    end = len(area)
    while i < end:
        code = area[i]
        if code == 0:  # PAD
            i += 1
            continue
        if code == 255:  # END
            return
        if i + 1 >= end:
            raise MalformedPacket(f"option {code} in {where} has no length byte")
        length = area[i + 1]
        stop = i + 2 + length
        if stop > end:
            raise MalformedPacket(f"option {code} in {where} runs past the end ({length} bytes)")
        previous = into.get(code)
        value = area[i + 2 : stop]
        into[code] = value if previous is None else previous + value
        i = stop


def parse_packet(data: bytes) -> DhcpPacket:
    """Decode one DHCP message; anything undecodable raises MalformedPacket."""
    if len(data) < HEADER_SIZE + len(MAGIC_COOKIE):
        raise MalformedPacket(f"a DHCP message has at least 240 bytes, got {len(data)}")
    (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname,
     file) = _HEADER.unpack_from(data)
    if data[HEADER_SIZE : HEADER_SIZE + 4] != MAGIC_COOKIE:
        raise MalformedPacket("no DHCP magic cookie (a plain BOOTP message?)")
    boot_op = _BOOT_OPS.get(op)
    if boot_op is None:
        raise MalformedPacket(f"BOOTP op must be 1 or 2, got {op}")
    if hlen > 16:
        raise MalformedPacket(f"hardware address length {hlen} exceeds 16")
    collected: dict[int, bytes] = {}
    _read_options(bytes(data), collected, "options", HEADER_SIZE + 4)
    overload_raw = collected.pop(OptionCode.OVERLOAD, None)
    if overload_raw is not None:
        value = decode_u8(OptionCode.OVERLOAD, overload_raw)
        if value not in (1, 2, 3):
            raise MalformedPacket(f"option 52 must be 1, 2 or 3, got {value}")
        overload = Overload(value)
        # RFC 3396 §7: the concatenation order is options, file, sname.
        extra: dict[int, bytes] = {}
        if overload & Overload.FILE:
            _read_options(file, extra, "file")
            file = b""
        if overload & Overload.SNAME:
            _read_options(sname, extra, "sname")
            sname = b""
        extra.pop(OptionCode.OVERLOAD, None)
        for code, more in extra.items():
            previous = collected.get(code)
            collected[code] = more if previous is None else previous + more
    # The header is in range by construction (unpacked from its fields), the option codes are
    # neither framing nor repeated (collected above): no need to check them again.
    return DhcpPacket._trusted(
        boot_op, xid, htype, hlen, hops, secs, flags, _address(ciaddr), _address(yiaddr),
        _address(siaddr), _address(giaddr), chaddr, sname.rstrip(b"\0"), file.rstrip(b"\0"),
        DhcpOptions._trusted(collected))
