"""Events are cut to size before they are stored, and pruned by age and count."""

from __future__ import annotations

from oneroot.inventory.events import EventStore
from oneroot.model.events import BootEvent, bounded_event
from oneroot.testing.postgres import StoreAt


def test_bounded_event_cuts_every_client_string() -> None:
    event = BootEvent(time=1.0, kind="tftp.error", file="x" * 65000, mac="m" * 300,
                      detail={f"k{n}": "v" * 5000 for n in range(40)})
    cut = bounded_event(event, text=256, detail_text=512, detail_keys=16)
    assert cut.file is not None and len(cut.file) == 257 and cut.file.endswith("…")
    assert cut.mac is not None and len(cut.mac) == 257
    assert len(cut.detail) == 16 and all(len(v) == 513 for v in cut.detail.values())
    small = BootEvent(time=1.0, kind="tftp.done", file="undionly.kpxe")
    assert bounded_event(small, text=256, detail_text=512, detail_keys=16) is small


def test_prune_by_age_and_count_keeps_node_status(store_at: StoreAt) -> None:
    store = EventStore(store_at("events"))
    store.record([BootEvent(time=float(t), kind="stage", node="node01", stage="init")
                  for t in range(100)])
    assert store.prune(now=150.0, max_age=120.0, keep=1000) == 30  # times 0..29
    assert store.count() == 70
    assert store.prune(now=150.0, max_age=1000.0, keep=10) == 60
    times = [t for (t,) in store.connection.execute("SELECT time FROM events ORDER BY id")]
    assert times == [float(t) for t in range(90, 100)]
    assert store.status()["node01"].stage == "init"
    store.close()
