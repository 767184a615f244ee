"""BootWork: per-node work only for the node's own fetch, during its boot, debounced, bounded."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from ipaddress import IPv4Address

from oneroot.model.events import BootEvent
from oneroot.model.limits import DEFAULT_LIMITS, Limits
from oneroot.serve.bootwork import BootWork

NODES = {f"node{n:02d}": IPv4Address(f"10.0.0.{10 + n}") for n in range(1, 9)}
ATTACKER = IPv4Address("10.0.0.99")


def dhcp(node: str, t: float) -> BootEvent:
    return BootEvent(time=t, kind="dhcp.ack", node=node, peer=NODES[node])


def fetch(node: str, t: float, peer: IPv4Address | None = None) -> BootEvent:
    return BootEvent(time=t, kind="http.done", node=node, peer=peer or NODES[node],
                     file=f"{node}.ipxe")


async def _run(events: list[BootEvent], limits: Limits = DEFAULT_LIMITS,
               slow: bool = False) -> list[str]:
    done: list[str] = []
    release = asyncio.Event()

    async def work(node: str) -> None:
        if slow:
            await release.wait()
        done.append(node)

    gate = BootWork(limits=limits, address_of=NODES.get,
                    is_boot_script=lambda node, file: file == f"{node}.ipxe", work=work,
                    clock=lambda: events[-1].time)
    for event in events:
        gate.gate(event)
        await asyncio.sleep(0)
    release.set()
    await gate.drain()
    return done


def run(events: list[BootEvent], **kw: object) -> list[str]:
    return asyncio.run(_run(events, **kw))  # type: ignore[arg-type]


def test_a_booting_node_gets_its_work_once() -> None:
    assert run([dhcp("node01", 0), fetch("node01", 1)]) == ["node01"]
    assert run([dhcp("node01", 0), fetch("node01", 1), fetch("node01", 2)]) == ["node01"]


def test_a_forged_fetch_from_another_address_does_nothing() -> None:
    assert run([dhcp("node01", 0), fetch("node01", 1, peer=ATTACKER)]) == []
    assert run([dhcp("node01", 0), fetch("node01", 1, peer=NODES["node02"])]) == []


def test_a_running_node_is_not_touched() -> None:
    running = BootEvent(time=2, kind="stage", node="node01", stage="init")
    assert run([dhcp("node01", 0), running, fetch("node01", 3)]) == []
    assert run([fetch("node01", 3)]) == []  # no DHCP answer at all
    assert run([dhcp("node01", 0), fetch("node01", 301)]) == []  # too long ago


def test_other_files_are_not_boot_scripts() -> None:
    kernel = replace(fetch("node01", 1), file="vmlinuz")
    assert run([dhcp("node01", 0), kernel]) == []


def test_debounce_and_queue_limit() -> None:
    limits = Limits(boot_work_debounce=30.0, boot_work_queue=3)
    again = [dhcp("node01", 0), fetch("node01", 1), dhcp("node01", 5), fetch("node01", 6)]
    assert run(again, limits=limits) == ["node01"]
    flood = [dhcp(n, 0) for n in NODES] + [fetch(n, 1) for n in NODES]
    assert len(run(flood, limits=limits, slow=True)) == 3


def test_limits_from_pairs() -> None:
    import pytest

    from oneroot.errors import InvalidValue
    from oneroot.model.limits import limits_from_pairs

    limits = limits_from_pairs(["tftp_sessions_per_client=2", "events_max_age=3600"])
    assert limits.tftp_sessions_per_client == 2 and limits.events_max_age == 3600.0
    for bad in ("nope=1", "tftp_sessions", "tftp_sessions=x", "tftp_sessions=0",
                "tftp_lockstep_threads=-1", "http_sendfile_threads=-1"):
        with pytest.raises(InvalidValue):
            limits_from_pairs([bad])
    # 0 lock-step threads: every lock-step transfer on the loop
    assert limits_from_pairs(["tftp_lockstep_threads=0"]).tftp_lockstep_threads == 0
    # 0 sendfile threads: every boot-file body on the loop
    assert limits_from_pairs(["http_sendfile_threads=0"]).http_sendfile_threads == 0
