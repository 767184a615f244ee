"""The stages `oneroot power` records from the BMC side, and serve's reading of them."""

from __future__ import annotations

from oneroot.inventory.events import EventStore
from oneroot.model.events import BMC_STAGES, STAGES, BootEvent
from oneroot.ops.power import PowerAction, PowerResult, stage_events
from oneroot.testing.postgres import StoreAt


def result(node: str, action: PowerAction, *, ok: bool = True) -> PowerResult:
    return PowerResult(node=node, action=action, bmc="10.0.1.11:623",
                       error=None if ok else "refused user 'admin'")


def test_successes_become_off_or_power_on_and_failures_nothing() -> None:
    events = stage_events([result("n1", PowerAction.OFF), result("n2", PowerAction.ON),
                           result("n3", PowerAction.CYCLE), result("n4", PowerAction.RESET),
                           result("n5", PowerAction.STATUS),
                           result("n6", PowerAction.ON, ok=False)], now=5.0)
    assert [(e.node, e.stage, e.detail["action"]) for e in events] == [
        ("n1", "off", "off"), ("n2", "power-on", "on"), ("n3", "power-on", "cycle"),
        ("n4", "power-on", "reset")]
    assert all(e.kind == "stage" and e.time == 5.0 and e.detail["source"] == "bmc"
               for e in events)
    assert set(BMC_STAGES) <= set(STAGES) and STAGES[:2] == BMC_STAGES


def test_serve_reads_only_the_bmc_stages_stored_after_its_mark(store_at: StoreAt) -> None:
    store = EventStore(store_at("events"))
    store.record([BootEvent(time=1.0, kind="stage", node="n1", stage="init")])
    mark = store.last_id()
    store.record([BootEvent(time=2.0, kind="dhcp.ack", node="n1"),
                  *stage_events([result("n1", PowerAction.OFF)], now=3.0),
                  BootEvent(time=4.0, kind="stage", node="n1", stage="runlevel"),
                  *stage_events([result("n1", PowerAction.ON)], now=5.0)])
    last, events = store.stages_after(mark, BMC_STAGES)
    assert [(e.stage, e.time) for e in events] == [("off", 3.0), ("power-on", 5.0)]
    assert last == store.last_id() and store.stages_after(last, BMC_STAGES) == (last, [])
    assert store.status()["n1"].stage == "power-on"
    store.close()
