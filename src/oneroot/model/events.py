"""Boot events: what the server saw a node do, from DHCP to its init."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

# Stable stage names, in boot order; `oneroot status` shows the last one per node.
STAGES = (
    "dhcp.offer",
    "dhcp.ack",
    "tftp",
    "http",
    "dhcp",
    "layers",
    "union",
    "switch_root",
    "init",
    "failed",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class BootEvent:
    """One thing served to (or reported by) a node.

    `kind` is a stable dotted name: `dhcp.offer`, `dhcp.ack`, `dhcp.nak`, `tftp.done`,
    `tftp.error`, `http.done`, `stage` (an initramfs stage report; `stage` names it).
    """

    time: float
    kind: str
    node: str | None = None
    mac: str | None = None
    peer: ipaddress.IPv4Address | None = None
    stage: str | None = None
    file: str | None = None
    bytes: int = 0
    duration: float = 0.0
    detail: Mapping[str, str] = field(default_factory=dict)
