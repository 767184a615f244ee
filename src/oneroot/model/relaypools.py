"""Discovery pools of relayed segments (setting `relay_pools`): a DHCP relay's address (the
giaddr it writes, on the segment it serves, usually that segment's router) with the segment's
prefix, and the addresses of that segment handed to unknown clients relayed from it.

    relay_pools = "10.1.5.1/24=10.1.5.100-10.1.5.199 10.1.6.1/24=10.1.6.100-10.1.6.199"

Each entry is `RELAY/PREFIX=FIRST-LAST`; entries are separated by spaces or commas. The relay's
address is the router its clients are told.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from oneroot.errors import InvalidValue
from oneroot.net import parse_ipv4

HINT = "e.g. relay_pools='10.1.5.1/24=10.1.5.100-10.1.5.199' (RELAY/PREFIX=FIRST-LAST)"


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayPool:
    relay: IPv4Address  # the giaddr of its requests, and its clients' router
    subnet: IPv4Network
    first: IPv4Address
    last: IPv4Address

    def __str__(self) -> str:
        return f"{self.relay}/{self.subnet.prefixlen}={self.first}-{self.last}"


def _parse_entry(item: str) -> RelayPool:
    relay_text, sep, span = item.partition("=")
    first_text, dash, last_text = span.partition("-")
    if not (sep and dash and "/" in relay_text):
        raise InvalidValue(f"relay_pools entry {item!r} is not RELAY/PREFIX=FIRST-LAST",
                           hint=HINT)
    try:
        relay = IPv4Interface(relay_text)
    except ValueError:
        raise InvalidValue(f"relay_pools entry {item!r}: {relay_text!r} is not an "
                           "address/prefix", hint=HINT) from None
    pool = RelayPool(relay=relay.ip, subnet=relay.network,
                     first=parse_ipv4(first_text, what="pool start"),
                     last=parse_ipv4(last_text, what="pool end"))
    subnet = pool.subnet
    if pool.first not in subnet or pool.last not in subnet or pool.last < pool.first:
        raise InvalidValue(f"relay_pools entry {item!r}: {pool.first}-{pool.last} is not a "
                           f"range inside {subnet}", hint=HINT)
    for address in (pool.relay, subnet.network_address, subnet.broadcast_address):
        if pool.first <= address <= pool.last:
            raise InvalidValue(f"relay_pools entry {item!r}: the pool contains {address}, "
                               "the relay's or the segment's own address", hint=HINT)
    return pool


def parse_relay_pools(raw: str | Iterable[object] | None) -> tuple[RelayPool, ...]:
    """`RELAY/PREFIX=FIRST-LAST` entries (text or a list of them), checked as a whole: one
    entry per segment, segments that do not overlap."""
    if raw is None or raw in ("", "none"):
        return ()
    items = raw.replace(",", " ").split() if isinstance(raw, str) else [str(v) for v in raw]
    pools = tuple(_parse_entry(item) for item in items)
    for index, pool in enumerate(pools):
        for other in pools[:index]:
            if pool.subnet.overlaps(other.subnet):
                raise InvalidValue(f"relay_pools: the segments {other.subnet} and "
                                   f"{pool.subnet} overlap", hint="one entry per segment")
    return pools
