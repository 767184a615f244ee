"""Boot timelines from boot events: the phases in order, each from its first event."""

from __future__ import annotations

from oneroot.model.events import BootEvent
from oneroot.ops.timeline import UP, Timeline, advance, failure_hint


def ev(t: float, kind: str, *, stage: str | None = None, file: str | None = None
       ) -> BootEvent:
    detail = {"status": "ok", "reported": stage} if kind == "stage" and stage else {}
    if kind == "http.done":
        detail = {"status": "200"}
    return BootEvent(time=t, kind=kind, node="node01", stage=stage, file=file, detail=detail)


BOOT = [
    ev(0, "stage", stage="power-on"),
    ev(8, "dhcp.offer"), ev(8.1, "dhcp.ack"),
    ev(8.5, "tftp.done", file="undionly.kpxe"),
    ev(9, "dhcp.ack"),  # iPXE's own DHCP: still the loader
    ev(9.2, "http.done", file="node01.ipxe"),
    ev(9.4, "http.done", file="vmlinuz"), ev(10, "http.done", file="initramfs.img"),
    ev(13, "dhcp.ack"),  # the initramfs's DHCP: still kernel/initramfs
    ev(13.5, "stage", stage="dhcp"), ev(15, "stage", stage="layers"),
    ev(15.5, "stage", stage="union"), ev(15.6, "stage", stage="switch_root"),
    ev(17, "stage", stage="init"), ev(25, "stage", stage="runlevel"),
]


def replay(events: list[BootEvent], start: Timeline | None = None) -> Timeline:
    timeline = start or Timeline()
    for event in events:
        timeline = advance(timeline, event)
    return timeline


def test_a_whole_boot_has_every_phase_with_its_time() -> None:
    tl = replay(BOOT)
    assert [(p.name, p.start, p.end) for p in tl.phases] == [
        ("power-on", 0, 8), ("dhcp", 8, 8.5), ("loader", 8.5, 9.4), ("kernel", 9.4, 13.5),
        ("layers", 13.5, 15), ("union", 15, 15.5), ("init", 15.5, 17),
        ("runlevel", 17, 25)]
    assert tl.up == 25 and tl.current == UP and tl.failed is None


def test_the_next_boot_starts_a_new_timeline() -> None:
    tl = replay([*BOOT, ev(100, "dhcp.offer"), ev(101, "tftp.done", file="undionly.kpxe")])
    assert [p.name for p in tl.phases] == ["dhcp", "loader"] and tl.up is None
    assert replay([*BOOT, ev(200, "stage", stage="power-on")]).phases[0].start == 200


def test_a_failure_is_kept_with_its_hint() -> None:
    failed = BootEvent(time=14, kind="stage", node="node01", stage="failed",
                       detail={"status": "failed", "message": "layers: mount: timed out"})
    tl = replay([*BOOT[:10], failed])
    assert tl.failed == "layers: mount: timed out" and tl.current == "layers"
    assert "oneroot nfs status" in failure_hint(tl.failed)


def test_refused_fetches_and_unknown_events_change_nothing() -> None:
    tl = replay(BOOT[:3])
    refused = BootEvent(time=9, kind="http.done", node="node01", file="vmlinuz",
                        detail={"status": "404"})
    assert replay([refused, ev(9, "tftp.error")], tl) == tl


def test_power_off_ends_the_boot_and_only_a_new_boot_leaves_off() -> None:
    off = ev(30, "stage", stage="off")
    tl = replay([*BOOT[:12], off])  # off while `init` was under way
    assert [(p.name, p.start, p.end) for p in tl.phases][-2:] == [("init", 15.5, 30),
                                                                  ("off", 30, None)]
    assert tl.current == "off" and tl.up is None and tl.as_json()["off"] == 30
    # A late report from the node, a file fetch: still off.
    assert replay([ev(31, "stage", stage="runlevel"), ev(32, "http.done", file="x")], tl) == tl
    on = replay([ev(40, "stage", stage="power-on")], tl)
    assert [p.name for p in on.phases] == ["power-on"] and on.current == "power-on"
    # Powered on by other means (a button on the box): its DHCP starts the next boot.
    assert replay([ev(50, "dhcp.offer")], tl).current == "dhcp"
    # Off after a finished boot: the runlevel phase stays closed, the node is no longer up.
    after_up = replay([*BOOT, off])
    assert after_up.current == "off" and after_up.phases[-2].name == "runlevel"
