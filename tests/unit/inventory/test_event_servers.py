"""Events from several servers on one database: each carries its server, and a node's status
is its newest event by time, whatever order the servers' batches arrive in."""

from __future__ import annotations

from oneroot.inventory.events import EventStore
from oneroot.model.events import BootEvent
from oneroot.testing.postgres import StoreAt


def test_a_late_batch_from_another_server_does_not_move_the_status_back(
        store_at: StoreAt) -> None:
    a, b = EventStore(store_at("events")), EventStore(store_at("events"))
    a.record([BootEvent(time=10.0, kind="dhcp.ack", node="n1", server="a")])
    b.record([BootEvent(time=9.5, kind="dhcp.offer", node="n1", server="b")])  # late
    status = a.status()["n1"]
    assert (status.stage, status.server) == ("dhcp.ack", "a")
    b.record([BootEvent(time=10.2, kind="dhcp.offer", node="n1", server="b")])  # lost race
    status = a.status()["n1"]
    assert (status.stage, status.server) == ("dhcp.ack", "a")
    b.record([BootEvent(time=11.0, kind="http.done", node="n1", server="b")])
    status = a.status()["n1"]
    assert (status.stage, status.server) == ("http", "b")
    servers = [s for (s,) in a.connection.execute("SELECT server FROM events ORDER BY time")]
    assert servers == ["b", "a", "b", "b"]
    a.close()
    b.close()


def test_an_ack_beats_the_lost_offer_whichever_batch_came_first(store_at: StoreAt) -> None:
    """Two servers answered one DISCOVER; the client took a's OFFER. b's OFFER (sent after a's
    ACK) reached the database first: a's ACK still becomes the node's status (seen in
    test_multi_server under load), and a later stage of b's still moves it on."""
    a, b = EventStore(store_at("events")), EventStore(store_at("events"))
    b.record([BootEvent(time=10.2, kind="dhcp.offer", node="n1", server="b")])
    a.record([BootEvent(time=10.0, kind="dhcp.ack", node="n1", server="a")])
    status = a.status()["n1"]
    assert (status.stage, status.server) == ("dhcp.ack", "a")
    a.record([BootEvent(time=9.0, kind="dhcp.offer", node="n1", server="a")])  # late, own
    assert a.status()["n1"].stage == "dhcp.ack"
    b.record([BootEvent(time=11.0, kind="http.done", node="n1", server="b")])
    assert (a.status()["n1"].stage, a.status()["n1"].server) == ("http", "b")
    a.close()
    b.close()
