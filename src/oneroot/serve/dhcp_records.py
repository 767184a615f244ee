"""The DHCP service's records: the health of its lease writes, a reply waiting to be sent, a
request waiting for its client's rows from the shared database, a count of refused requests,
addresses and their text."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import NamedTuple, TypeVar

from oneroot.net import MacAddress
from oneroot.proto.dhcp import DhcpPacket, ReplyEvent

log = logging.getLogger("oneroot.serve.dhcp")
_K = TypeVar("_K")
_V = TypeVar("_V")


@dataclass(slots=True)
class DhcpHealth:
    """What `oneroot status` shows about the DHCP service's writes."""

    commit_failures: int = 0
    replies_dropped: int = 0
    last_error: str = ""
    last_failure: float = 0.0
    last_commit: float = 0.0
    decline_from_link: bool = False  # the packet socket is open: direct DECLINEs are read

    @property
    def failing(self) -> bool:
        return self.last_failure > self.last_commit


class Reply(NamedTuple):  # a tuple: built for every reply, cheaper than a dataclass
    data: bytes  # encoded
    address: tuple[str, int]
    port: int  # the server port it answers, whose socket sends it
    event: ReplyEvent | None
    received: float
    claim: DhcpPacket | None = None  # the REQUEST of a pool ACK: NAKed if the claim is lost
    alias: IPv4Address | None = None  # the peer identifier it answered as


class Reread(NamedTuple):  # a REQUEST waiting for its client's rows from the database
    data: bytes
    address: tuple[str, int]
    port: int
    mac: MacAddress
    wanted: IPv4Address
    frame_source: MacAddress | None  # a direct DECLINE's Ethernet source
    alias: IPv4Address | None  # sent to a peer's service address this server holds


class Refusals:
    """Requests refused for one reason: counted, and logged at most once per `interval`
    seconds with the count so far (a refused client asks again every few seconds; a line per
    try would flood the log)."""

    def __init__(self, event: str, reason: str, interval: float = 60.0) -> None:
        self.event = event
        self.reason = reason
        self.interval = interval
        self.count = 0
        self._next_log = float("-inf")

    def add(self, now: float, **fields: object) -> None:
        self.count += 1
        if now >= self._next_log:
            self._next_log = now + self.interval
            log.warning("%s %s count=%d reason=%s", self.event,
                        " ".join(f"{k}={v}" for k, v in fields.items()), self.count,
                        self.reason)


class AddressTexts:
    """Peers' address texts (recvfrom) as addresses, for the responder, and addresses as text,
    for sendto: both cached (an OFFER's address is its ACK's; replies to relays and broadcasts
    go to a few addresses)."""

    def __init__(self) -> None:
        self._addresses: dict[str, IPv4Address] = {}
        self._texts: dict[IPv4Address, str] = {}

    def peer(self, addr: tuple[str, int]) -> tuple[IPv4Address, int]:
        address = self._addresses.get(addr[0])
        if address is None:
            address = self._remember(self._addresses, addr[0], IPv4Address(addr[0]))
        return address, addr[1]

    def text(self, address: IPv4Address) -> str:
        """`str(address)`."""
        text = self._texts.get(address)
        if text is None:
            text = self._remember(self._texts, address, str(address))
        return text

    @staticmethod
    def _remember(cache: dict[_K, _V], key: _K, value: _V) -> _V:
        if len(cache) >= 1024:  # relays and clients renewing: a few distinct peers at a time
            cache.clear()
        cache[key] = value
        return value
