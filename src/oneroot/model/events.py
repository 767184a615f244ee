"""Boot events: what the server saw a node do, from DHCP to its init."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

# The initramfs's stages, in the order /init runs them: the one list (the builder writes it
# into the initramfs as ONEROOT_STAGES). `modules` runs before the network is up: no report.
INITRAMFS_STAGES = ("modules", "dhcp", "layers", "union", "switch_root")
SILENT_STAGES = ("modules",)
# The stages a node reports itself (POST /api/v1/report): the initramfs's, then `init` from
# the booted image when its init starts and `runlevel` when its runlevel is reached, and
# `failed`; and the statuses it may give.
REPORTED_STAGES = (*(s for s in INITRAMFS_STAGES if s not in SILENT_STAGES), "init", "runlevel",
                   "failed")
# The stages a node's BMC side records (`oneroot power`, the admin page's buttons): `off` when
# a power off succeeded, `power-on` when a power on, cycle or reset did (a new boot begins).
BMC_STAGES = ("off", "power-on")
# Stable stage names, in boot order; `oneroot status` shows the last one per node.
STAGES = (*BMC_STAGES, "dhcp.offer", "dhcp.ack", "tftp", "http", *REPORTED_STAGES)
STAGE_STATUSES = ("ok", "failed")


# A node's result for one of its declared checks (`model.checks`): detail `check` (its index),
# `status` (ok|failed), `message`. Not a stage: a node's stage stays `runlevel`.
CHECK_EVENT = "check"

# The event that says which image version a node's boot file named (detail `image`: NAME@N);
# the events store keeps the last one per node: the version the node runs until it reboots.
BOOT_IMAGE = "boot.image"


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
    server: str | None = None  # the id of the server that saw it (several may share a database)


def _cut(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + "…"


def bounded_event(event: BootEvent, *, text: int, detail_text: int, detail_keys: int
                  ) -> BootEvent:
    """`event` with every string a client controls cut to a size (a refused TFTP name may be
    64 KB; stored whole, a flood of them fills the disk)."""
    detail = event.detail
    if detail and (len(detail) > detail_keys or any(
            len(k) > text or len(v) > detail_text for k, v in detail.items())):
        detail = {str(_cut(k, text)): str(_cut(v, detail_text))
                  for k, v in list(detail.items())[:detail_keys]}
    if detail is event.detail:  # a loop, not all(): this runs for every DHCP reply
        for value in (event.kind, event.node, event.mac, event.stage, event.file):
            if value is not None and len(value) > text:
                break
        else:
            return event
    return BootEvent(time=event.time, kind=str(_cut(event.kind, text)),
                     node=_cut(event.node, text), mac=_cut(event.mac, text), peer=event.peer,
                     stage=_cut(event.stage, text), file=_cut(event.file, text),
                     bytes=event.bytes, duration=event.duration, detail=detail,
                     server=event.server)


def bmc_stage_event(*, node: str, stage: str, action: str, time: float) -> BootEvent:
    """A stage the BMC side records for `node` (one of BMC_STAGES) after `action` succeeded."""
    if stage not in BMC_STAGES:
        raise ValueError(f"not a BMC stage: {stage!r}")
    return BootEvent(time=time, kind="stage", node=node, stage=stage,
                     detail={"status": "ok", "reported": stage, "source": "bmc",
                             "action": action})
