"""DHCP wire numbers (RFC 2131/2132, 4578, 3046, iPXE) and the ordered option mapping.

`DhcpOptions` is an immutable, ordered `Mapping[int, bytes]`: one value per code, in the order
first seen. Splitting long values into several instances (RFC 3396) is the codec's business.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import ItemsView, Iterable, Iterator, Mapping
from ipaddress import IPv4Address
from typing import TypeVar, overload

from oneroot.errors import LocalProtocolError, MalformedPacket

SERVER_PORT = 67
CLIENT_PORT = 68
PXE_PORT = 4011  # ProxyDHCP REQUEST/ACK (PXE spec 2.1, "boot server discovery")

_T = TypeVar("_T")

MAGIC_COOKIE = b"\x63\x82\x53\x63"
PXE_CLIENT = b"PXEClient"
IPXE_USER_CLASS = b"iPXE"
BROADCAST_FLAG = 0x8000


class BootOp(enum.IntEnum):
    REQUEST = 1
    REPLY = 2


class MessageType(enum.IntEnum):
    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


class OptionCode(enum.IntEnum):
    PAD = 0
    SUBNET_MASK = 1
    ROUTER = 3
    DNS_SERVERS = 6
    HOSTNAME = 12
    DOMAIN_NAME = 15
    BROADCAST_ADDRESS = 28
    VENDOR_SPECIFIC = 43
    REQUESTED_ADDRESS = 50
    LEASE_TIME = 51
    OVERLOAD = 52
    MESSAGE_TYPE = 53
    SERVER_ID = 54
    PARAMETER_REQUEST_LIST = 55
    MESSAGE = 56
    MAX_MESSAGE_SIZE = 57
    RENEWAL_TIME = 58
    REBINDING_TIME = 59
    VENDOR_CLASS = 60
    CLIENT_ID = 61
    TFTP_SERVER_NAME = 66
    BOOTFILE_NAME = 67
    USER_CLASS = 77
    RELAY_AGENT_INFO = 82
    CLIENT_ARCH = 93
    CLIENT_NDI = 94
    CLIENT_UUID = 97
    IPXE_ENCAP = 175
    END = 255


class Overload(enum.IntFlag):
    """Option 52: which BOOTP fields carry options too (RFC 2132 §9.3)."""

    FILE = 1
    SNAME = 2


class ClientArch(enum.IntEnum):
    """Option 93 (RFC 4578, IANA "Processor Architecture Types")."""

    BIOS = 0
    UEFI_IA32 = 6
    UEFI_X64 = 7
    UEFI_BC = 9  # EFI byte code; x86-64 firmware in the wild sends it too

    @property
    def is_uefi(self) -> bool:
        return self is not ClientArch.BIOS


class PxeSubOption(enum.IntEnum):
    """Sub-options of option 43 when option 60 is `PXEClient` (PXE spec 2.1)."""

    DISCOVERY_CONTROL = 6
    END = 255


# PXE_DISCOVERY_CONTROL bit 3: use the boot file of the (Proxy)DHCP offer, no menu, no prompt.
PXE_DISCOVERY_BOOTFILE_ONLY = 8


class IpxeSubOption(enum.IntEnum):
    """Sub-options of option 175 that iPXE reads (ipxe/include/ipxe/dhcp.h)."""

    # DHCP_EB_NO_PXEDHCP: non-zero → do not wait for ProxyDHCP offers, ignore PXE options.
    NO_PXEDHCP = 0xB0


class DhcpOptions(Mapping[int, bytes]):
    """Ordered, immutable `code -> value`; codes 0 (pad), 52 (overload) and 255 (end) excluded:
    they are framing, which the codec writes and consumes."""

    __slots__ = ("_items", "_wire")
    _items: dict[int, bytes]
    _wire: bytes | None  # the encoded options area, kept by the codec once it has made it

    def __init__(self, items: Mapping[int, bytes] | Iterable[tuple[int, bytes]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        built: dict[int, bytes] = {}
        for code, value in pairs:
            if not 0 < code < 255 or code == OptionCode.OVERLOAD:
                raise LocalProtocolError(f"option code {code} is framing, not an option")
            if code in built:
                raise LocalProtocolError(f"option {code} given twice")
            built[int(code)] = value if type(value) is bytes else bytes(value)
        object.__setattr__(self, "_items", built)
        object.__setattr__(self, "_wire", None)

    @classmethod
    def _trusted(cls, items: dict[int, bytes]) -> DhcpOptions:
        """Wrap `items` without checking or copying them: for the codec and the responder,
        whose codes are valid by construction and whose values are already `bytes`. The dict
        is owned by the result from then on."""
        options = object.__new__(cls)
        object.__setattr__(options, "_items", items)
        object.__setattr__(options, "_wire", None)
        return options

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("DhcpOptions is immutable")

    def __getitem__(self, code: int) -> bytes:
        return self._items[code]

    def __iter__(self) -> Iterator[int]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    # Fast paths: the Mapping mixins go through __iter__/__getitem__ per item.
    def __contains__(self, code: object) -> bool:
        return code in self._items

    @overload
    def get(self, code: int, /) -> bytes | None: ...

    @overload
    def get(self, code: int, default: bytes | _T, /) -> bytes | _T: ...

    def get(self, code: int, default: object = None, /) -> object:
        return self._items.get(code, default)

    def items(self) -> ItemsView[int, bytes]:
        return self._items.items()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DhcpOptions):
            return list(self._items.items()) == list(other._items.items())
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{code}: {value!r}" for code, value in self._items.items())
        return f"DhcpOptions({{{inner}}})"

    def replace(self, code: int, value: bytes | None) -> DhcpOptions:
        """A copy with `code` set (in place if present, else last) or removed (`None`)."""
        items = dict(self._items)
        if value is None:
            items.pop(code, None)
        else:
            items[code] = value
        return DhcpOptions(items)


# --- value codecs: wire bytes <-> typed values. Decoders raise MalformedPacket. ---

def encode_u8(value: int) -> bytes:
    return struct.pack("!B", value)


def encode_u32(value: int) -> bytes:
    return struct.pack("!I", value)


def encode_addresses(*addresses: IPv4Address) -> bytes:
    return b"".join(a.packed for a in addresses)


def decode_u8(code: int, value: bytes) -> int:
    if len(value) != 1:
        raise MalformedPacket(f"option {code} must be 1 byte, got {len(value)}")
    return value[0]


def decode_u16(code: int, value: bytes) -> int:
    if len(value) != 2:
        raise MalformedPacket(f"option {code} must be 2 bytes, got {len(value)}")
    return int.from_bytes(value, "big")


def decode_address(code: int, value: bytes) -> IPv4Address:
    if len(value) != 4:
        raise MalformedPacket(f"option {code} must be one IPv4 address, got {len(value)} bytes")
    return IPv4Address(value)


def encode_suboptions(items: Iterable[tuple[int, bytes]]) -> bytes:
    """Encapsulated options (43, 175): code, length, value, ... and a closing END."""
    out = bytearray()
    for code, value in items:
        if len(value) > 255:
            raise LocalProtocolError(f"sub-option {code} is longer than 255 bytes")
        out += bytes((code, len(value))) + value
    out.append(255)
    return bytes(out)


def decode_suboptions(code: int, value: bytes) -> dict[int, bytes]:
    result: dict[int, bytes] = {}
    i = 0
    while i < len(value):
        sub = value[i]
        if sub == 0:
            i += 1
            continue
        if sub == 255:
            break
        if i + 2 > len(value) or i + 2 + value[i + 1] > len(value):
            raise MalformedPacket(f"option {code}: sub-option {sub} runs past the end")
        length = value[i + 1]
        result[sub] = result.get(sub, b"") + value[i + 2 : i + 2 + length]
        i += 2 + length
    return result
