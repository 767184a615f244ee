"""MAC addresses and IPv4 helpers shared by every layer."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from oneroot.errors import InvalidValue

_HEX_PAIRS = re.compile(r"^[0-9a-f]{2}([:\-.]?[0-9a-f]{2}){5}$")


@dataclass(frozen=True, slots=True, order=True)
class MacAddress:
    """A 48-bit Ethernet address; prints as lowercase `aa:bb:cc:dd:ee:ff`."""

    packed: bytes

    def __post_init__(self) -> None:
        if len(self.packed) != 6:
            raise InvalidValue(f"a MAC address has 6 bytes, not {len(self.packed)}")

    @classmethod
    def parse(cls, text: str) -> MacAddress:
        """Accept `aa:bb:cc:dd:ee:ff`, `AA-BB-…`, `aabb.ccdd.eeff` and `aabbccddeeff`."""
        raw = text.strip().lower()
        if raw.startswith("01-") and len(raw) == 20:  # pxelinux's ARP-type-prefixed form
            raw = raw[3:]
        digits = re.sub(r"[:\-.]", "", raw)
        if not (_HEX_PAIRS.match(raw) or re.fullmatch(r"[0-9a-f]{4}(\.[0-9a-f]{4}){2}", raw)) \
                or len(digits) != 12:
            raise InvalidValue(
                f"malformed MAC address {text!r}",
                hint="write it as six hex pairs, e.g. 52:54:00:12:34:56",
            )
        return cls(bytes.fromhex(digits))

    def __str__(self) -> str:
        return ":".join(f"{b:02x}" for b in self.packed)

    @property
    def dashed(self) -> str:
        return "-".join(f"{b:02x}" for b in self.packed)

    @property
    def pxelinux_name(self) -> str:
        """The file name pxelinux asks for: `01-` (ARP type Ethernet) + dashed MAC."""
        return f"01-{self.dashed}"

    @property
    def is_multicast(self) -> bool:
        return bool(self.packed[0] & 1)


def parse_ipv4(text: str, *, what: str = "address") -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text.strip())
    except ValueError:
        raise InvalidValue(
            f"malformed IPv4 {what} {text!r}", hint="write it as four numbers, e.g. 10.0.0.11"
        ) from None


def parse_network(text: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(text.strip(), strict=False)
    except ValueError:
        raise InvalidValue(
            f"malformed IPv4 subnet {text!r}", hint="write it as address/prefix, e.g. 10.0.0.0/24"
        ) from None
