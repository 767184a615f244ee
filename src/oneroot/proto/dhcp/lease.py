"""The lease values the responder decides about and the store keeps (pure data)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Protocol

from oneroot.net import MacAddress


class LeaseState(enum.IntEnum):
    OFFERED = 1  # kept in memory only: an offer need not survive a crash
    BOUND = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    mac: MacAddress
    address: IPv4Address
    node: str | None  # None: an unknown client on a pool address
    expires: float
    state: LeaseState
    relay_info: bytes | None = None  # option 82 of the relayed REQUEST that bound it


class LeaseAction(enum.IntEnum):
    BIND = 1
    RELEASE = 2
    DECLINE = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseChange:
    action: LeaseAction
    mac: MacAddress
    address: IPv4Address
    node: str | None = None
    expires: float = 0.0  # BIND: lease end; DECLINE: end of the quarantine
    state: LeaseState = LeaseState.BOUND
    relay_info: bytes | None = None  # BIND through a relay: its option 82


class LeaseView(Protocol):
    """What the responder reads of the lease database."""

    def lease_for_mac(self, mac: MacAddress) -> Lease | None: ...

    def lease_for_address(self, address: IPv4Address) -> Lease | None: ...

    def is_declined(self, address: IPv4Address, now: float) -> bool: ...
