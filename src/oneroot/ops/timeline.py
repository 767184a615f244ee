"""A node's boot as phases (power-on → DHCP → loader → kernel/initramfs → layers → union →
init → runlevel), from the boot events the server records, for the web status page.

Each phase starts at one event: the server's own observations start the early ones (a power
action, its first DHCP answer, the first file fetched, the kernel's fetch) and the node's stage
reports, which /init sends when a stage is done, start the next one (the `dhcp` report ends
kernel/initramfs and starts `layers`). A phase lasts until the next one starts; `runlevel`
ends with the `runlevel` report, and the node is `up`. A power off (the BMC side's `off`
stage) ends whatever phase was under way and starts `off`, which lasts until the next boot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from oneroot.model.events import BootEvent

PHASES = ("power-on", "dhcp", "loader", "kernel", "layers", "union", "init", "runlevel")
OFF = "off"
PHASE_LABELS = {"power-on": "power-on", "dhcp": "DHCP", "loader": "loader",
                "kernel": "kernel/initramfs", "layers": "layers", "union": "union",
                "init": "init", "runlevel": "runlevel", OFF: "off"}
UP = "up"  # after the runlevel report: the boot is over
# The phase a stage report starts (it is sent when the previous one is done).
_PHASE_AFTER_REPORT = {"dhcp": "layers", "layers": "union", "union": "init",
                       "init": "runlevel", "runlevel": UP}
_KERNEL_FILE = re.compile(r"(vmlinu|kernel|bzimage|initr|\.cpio)", re.IGNORECASE)
# What to try first when a node reports that a stage failed.
FAILURE_HINTS = {
    "dhcp": "the initramfs got no address: check `oneroot serve` runs DHCP on the node's link",
    "layers": "a layer did not mount: check `oneroot nfs status` and the node's exports",
    "union": "the union did not mount: check the node's rootspec with `oneroot node show`",
    "switch_root": "the root has no init: check the node's image with `oneroot image list`",
}
DEFAULT_HINT = "see the node's console (`oneroot lab console NODE` in the lab)"


@dataclass(frozen=True, slots=True, kw_only=True)
class Phase:
    name: str
    start: float
    end: float | None = None  # None: under way

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "label": PHASE_LABELS[self.name], "start": self.start,
                "end": self.end}


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeline:
    """The phases of a node's latest boot, in order; `failed` is the failure's message."""

    phases: tuple[Phase, ...] = ()
    up: float | None = None  # when the runlevel was reached
    failed: str | None = None
    off: float | None = None  # when the node was powered off (its last phase is `off`)

    @property
    def current(self) -> str | None:
        if self.off is not None:
            return OFF
        if self.up is not None:
            return UP
        return self.phases[-1].name if self.phases else None

    def as_json(self) -> dict[str, object]:
        return {"phases": [p.as_json() for p in self.phases], "up": self.up,
                "failed": self.failed, "off": self.off, "current": self.current}


def _phase_of(event: BootEvent) -> str | None:
    """The phase an event starts (or belongs to), or None when it says nothing of the boot."""
    if event.kind == "stage":
        if event.stage == "power-on":
            return "power-on"
        return _PHASE_AFTER_REPORT.get(event.detail.get("reported", event.stage or ""))
    if event.kind in ("dhcp.offer", "dhcp.ack"):
        return "dhcp"
    if event.kind in ("tftp.done", "http.done") and event.file:
        if event.detail.get("status", "200") not in ("200", "206"):
            return None
        return "kernel" if _KERNEL_FILE.search(event.file) else "loader"
    return None


def advance(timeline: Timeline, event: BootEvent) -> Timeline:
    """The timeline after one more event (events come in time order)."""
    if event.kind == "stage" and event.stage == "failed":
        return replace(timeline, failed=event.detail.get("message") or "failed")
    if event.kind == "stage" and event.stage == OFF:
        return Timeline(phases=(*_closed(timeline.phases, event.time),
                                Phase(name=OFF, start=event.time)), off=event.time)
    phase = _phase_of(event)
    if phase is None:
        return timeline
    current = timeline.current
    order = (*PHASES, UP)
    restart = phase == "power-on" or (phase == "dhcp" and current is not None and (
        current == OFF or order.index(current) >= order.index("layers")))
    if current == OFF and not restart:
        return timeline  # nothing but a new boot leaves `off`
    if restart or current is None:
        return Timeline(phases=(Phase(name=phase, start=event.time),))
    if order.index(phase) <= order.index(current):
        return timeline  # iPXE's own DHCP, the initramfs's: still the same phase
    phases = _closed(timeline.phases, event.time)
    if phase == UP:
        return replace(timeline, phases=phases, up=event.time)
    return replace(timeline, phases=(*phases, Phase(name=phase, start=event.time)))


def _closed(phases: tuple[Phase, ...], now: float) -> tuple[Phase, ...]:
    """`phases` with the one under way (if any) ended at `now`."""
    if phases and phases[-1].end is None:
        return (*phases[:-1], replace(phases[-1], end=now))
    return phases


def failure_hint(message: str) -> str:
    """The hint for a failure report's message (`STAGE: reason`)."""
    stage = message.partition(":")[0].strip()
    return FAILURE_HINTS.get(stage, DEFAULT_HINT)
