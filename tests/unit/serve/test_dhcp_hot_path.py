"""What the DHCP service's hot path leaves out, and what it keeps: an offer of a free address
leaves before the batch's group commit while an ACK waits for its lease's write, and no
BootEvent is built for a pool client's reply when the recorder would drop it."""

from __future__ import annotations

import sqlite3
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from oneroot.inventory.leases import LeaseStore
from oneroot.net import MacAddress
from oneroot.proto.dhcp import MessageType, NetworkConfig, NodeBoot, parse_packet
from oneroot.serve.dhcp import DhcpService
from oneroot.testing.dhcpmsg import client_message

SERVER = IPv4Address("10.0.0.1")
NODE_MAC = MacAddress.parse("02:00:00:00:00:01")
FIRST = MacAddress.parse("02:00:00:00:00:98")
STRANGER = MacAddress.parse("02:00:00:00:00:99")
NODE = NodeBoot(name="n1", address=IPv4Address("10.0.0.10"), bios_file="undionly.kpxe",
                uefi_file="ipxe.efi", ipxe_url="http://10.0.0.1/boot/n1.ipxe")
NETWORK = NetworkConfig(server_address=SERVER, subnet=IPv4Network("10.0.0.0/16"),
                        pool=(IPv4Address("10.0.1.0"), IPv4Address("10.0.1.255")))
CLIENT = ("0.0.0.0", 68)


class Sink:
    """The service's socket: each reply with what the database file held when it was sent
    (read on a connection of its own: what another process, or a restart, would find)."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.sent: list[tuple[MessageType | None, list[str]]] = []

    def sendto(self, data: bytes, address: tuple[str, int]) -> int:
        with sqlite3.connect(self.db) as conn:
            written = [mac for (mac,) in conn.execute("SELECT mac FROM leases ORDER BY mac")]
        self.sent.append((parse_packet(data).message_type, written))
        return len(data)


def service(tmp_path: Path, **kwargs: object) -> tuple[DhcpService, Sink]:
    db = tmp_path / "leases.db"
    dhcp = DhcpService(interface="lo", server_address=SERVER, network=NETWORK,
                       lookup={NODE_MAC: NODE}.get, leases=LeaseStore(db, synchronous="NORMAL"),
                       on_event=lambda event: None, is_reserved={NODE.address}.__contains__,
                       **kwargs)  # type: ignore[arg-type]
    sink = Sink(db)
    dhcp._sockets[67] = sink  # type: ignore[assignment]
    return dhcp, sink


def message(mtype: MessageType, mac: MacAddress, **fields: IPv4Address) -> bytes:
    return client_message(mtype, mac=mac.packed, xid=int.from_bytes(mac.packed[-2:], "big"),
                          **fields).to_bytes()  # type: ignore[arg-type]


def test_an_offer_leaves_before_the_group_commit_and_an_ack_after_its_lease_is_written(
        tmp_path: Path) -> None:
    dhcp, sink = service(tmp_path)
    dhcp._serve([(message(MessageType.DISCOVER, FIRST), CLIENT)], 67)
    offered = dhcp.leases.lease_for_mac(FIRST)
    assert offered is not None
    sink.sent.clear()
    # one batch: a new client's DISCOVER after the first client's REQUEST
    dhcp._serve([(message(MessageType.REQUEST, FIRST, requested=offered.address,
                          server_id=SERVER), CLIENT),
                 (message(MessageType.DISCOVER, STRANGER), CLIENT)], 67)
    # the OFFER went while the batch was decided (nothing of the batch written yet); the
    # ACK only once its lease was in the file
    assert sink.sent == [(MessageType.OFFER, []), (MessageType.ACK, [str(FIRST)])]
    dhcp._sockets.clear()
    dhcp.leases.close()


def test_without_pool_events_only_replies_about_nodes_become_boot_events(
        tmp_path: Path) -> None:
    """serve's recorder keeps no reply to a pool client, so serve's service builds none
    (`pool_events=False`); a node's reply, and one naming a node's address (a NAK of a
    stranger asking for it), still go to `on_event`."""
    events: list[tuple[str, str | None, IPv4Address | None]] = []
    for pool_events in (False, True):
        dhcp, _ = service(tmp_path / str(pool_events), pool_events=pool_events)
        dhcp.on_event = lambda e: events.append((e.kind, e.node, e.peer))
        for data in (message(MessageType.DISCOVER, STRANGER),
                     message(MessageType.DISCOVER, NODE_MAC),
                     message(MessageType.REQUEST, STRANGER, requested=NODE.address)):
            reply, _ = dhcp._decide(data, CLIENT, 67, 1000.0)
            assert reply is not None
            dhcp._send(reply)
        dhcp._sockets.clear()
        dhcp.leases.close()
        kinds = [("dhcp.offer", "n1", NODE.address), ("dhcp.nak", None, NODE.address)]
        if pool_events:  # the default: every reply
            offered = dhcp.leases.lease_for_mac(STRANGER)
            assert offered is not None
            kinds.insert(0, ("dhcp.offer", None, offered.address))
        assert events == kinds
        events.clear()
