"""The DHCP service around the reread: on a shared database (PostgreSQL) a pool client's
renewal its view cannot answer waits for a read of the client's rows in a worker thread and
is answered then (the ACK after its claim is written); on SQLite (one server owns the file,
its view is the whole table) nothing is read and the answer is what it always was; the
renewals waiting for a read are bounded (`Limits.lease_rereads_pending`)."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network

from oneroot.inventory.leases import LeaseStore
from oneroot.model.events import BootEvent
from oneroot.model.limits import DEFAULT_LIMITS
from oneroot.net import MacAddress
from oneroot.proto.dhcp import LeaseAction, LeaseChange, LeaseState, MessageType, NetworkConfig
from oneroot.serve.dhcp import DhcpService
from oneroot.testing.dhcpmsg import client_message
from oneroot.testing.postgres import StoreAt

CLIENT = MacAddress.parse("02:00:00:00:00:07")
RELAY = IPv4Address("127.0.0.1")  # replies go to the relay: loopback, nothing leaves the host
MAIN = NetworkConfig(server_address=IPv4Address("10.0.0.3"), subnet=IPv4Network("10.0.0.0/16"),
                     pool=(IPv4Address("10.0.1.0"), IPv4Address("10.0.1.255")))
# The relay's segment and its pool (setting relay_pools): a relay outside the subnet without
# one gets nothing
NETWORK = replace(MAIN, segments=(replace(MAIN, subnet=IPv4Network("127.0.0.0/8"), router=RELAY,
                                          pool=(IPv4Address("127.0.1.0"),
                                                IPv4Address("127.0.1.255"))),))
ADDRESS = IPv4Address("127.0.1.7")


def rebind(mac: MacAddress = CLIENT) -> bytes:
    """A relayed INIT-REBOOT REQUEST for ADDRESS (no server id, no ciaddr)."""
    return client_message(MessageType.REQUEST, mac=mac.packed, xid=11, requested=ADDRESS,
                          giaddr=RELAY).to_bytes()


def bound_by_a(store_at: StoreAt) -> None:
    a = LeaseStore(store_at("leases"), server="a")
    a.stage(LeaseChange(action=LeaseAction.BIND, mac=CLIENT, address=ADDRESS,
                        expires=time.time() + 600, state=LeaseState.BOUND))
    assert a.commit() == []
    a.close()


async def renew_through_b(b: DhcpService) -> list[BootEvent]:
    events: list[BootEvent] = []
    b.on_event = events.append
    b._loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        b._sockets[67] = sock
        b._serve([(rebind(), (str(RELAY), 67))], 67)
        for _ in range(500):  # the read and the claim's write run in worker threads
            if events or not (b._rereads or b._rereading or b._writing):
                break
            await asyncio.sleep(0.02)
        b._sockets.clear()
    return events


def test_b_answers_a_renewal_of_a_lease_a_bound_on_postgresql(store_at: StoreAt) -> None:
    store = LeaseStore(store_at("leases"), server="b")  # loaded before A binds the client
    b = DhcpService(interface="lo", server_address=NETWORK.server_address, network=NETWORK,
                    lookup=lambda mac: None, leases=store, on_event=lambda event: None)
    bound_by_a(store_at)
    events = asyncio.run(renew_through_b(b))
    if store.remote:
        assert [(e.kind, e.peer) for e in events] == [("dhcp.ack", ADDRESS)]
        assert b.rereads == 1
        held = store.lease_for_mac(CLIENT)
        assert held is not None and held.address == ADDRESS
    else:  # SQLite: one server per file, the view is the table: no read, as before
        assert events == [] and b.rereads == 0
    store.close()


def test_renewals_waiting_for_a_read_are_bounded(store_at: StoreAt) -> None:
    store = LeaseStore(store_at("leases"), server="b")
    b = DhcpService(interface="lo", server_address=NETWORK.server_address, network=NETWORK,
                    lookup=lambda mac: None, leases=store, on_event=lambda event: None,
                    limits=replace(DEFAULT_LIMITS, lease_rereads_pending=3))
    for n in range(5):  # no loop running: none is read, they wait
        reply, _ = b._decide(rebind(MacAddress(bytes((2, 0, 0, 0, 1, n)))),
                             (str(RELAY), 67), 67, time.time())
        assert reply is None
    if store.remote:
        assert (len(b._rereads), b.rereads_dropped) == (3, 2)
    else:
        assert (len(b._rereads), b.rereads_dropped) == (0, 0)
    store.close()
