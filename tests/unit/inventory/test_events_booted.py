"""The events store keeps, per node, the image version its last boot file named (what it runs
until it reboots), on both engines; other events leave it alone."""

from __future__ import annotations

from oneroot.inventory.events import EventStore
from oneroot.model.events import BOOT_IMAGE, BootEvent
from oneroot.testing.postgres import StoreAt


def test_the_last_boot_file_of_each_node_names_what_it_runs(store_at: StoreAt) -> None:
    events = EventStore(store_at("events"))
    try:
        assert events.booted_images() == {}
        events.record([
            BootEvent(time=1.0, kind=BOOT_IMAGE, node="node01", detail={"image": "lab@1"}),
            BootEvent(time=2.0, kind=BOOT_IMAGE, node="node02", detail={"image": "lab"}),
            BootEvent(time=3.0, kind="http.done", node="node01", detail={"image": "lab@9"}),
            BootEvent(time=4.0, kind=BOOT_IMAGE, node=None, detail={"image": "lab@7"}),
            BootEvent(time=5.0, kind=BOOT_IMAGE, node="node03", detail={}),
        ])
        events.record([BootEvent(time=6.0, kind=BOOT_IMAGE, node="node01",
                                 detail={"image": "lab@2"})])
        assert events.booted_images() == {"node01": "lab@2", "node02": "lab"}
        events.prune(now=100.0, max_age=1.0, keep=0)  # the log goes, what runs stays
        assert events.count() == 0 and events.booted_images()["node01"] == "lab@2"
    finally:
        events.close()
