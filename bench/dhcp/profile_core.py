"""The server's per-exchange Python cost without sockets: DORA through parse → respond →
lease stage/commit → encode, as `serve.dhcp` runs it, for the bench's two modes.

    .venv/bin/python bench/dhcp/profile_core.py [--exchanges 20000] [--batch 8] [--profile]

Times are CPU time of this process (time.process_time), so other load on the machine
disturbs them less than wall time would.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from oneroot.inventory.leases import LeaseStore
from oneroot.net import MacAddress
from oneroot.proto.dhcp import MessageType, NetworkConfig, NodeBoot, parse_packet, respond
from oneroot.testing.dhcpmsg import client_message, numbered_mac

SERVER = IPv4Address("10.1.0.1")
BASE = int(IPv4Address("10.1.0.10"))
PRL = bytes((1, 3, 6, 12, 15, 51, 54))


def discover(index: int) -> bytes:
    return client_message(MessageType.DISCOVER, mac=numbered_mac(index), xid=index,
                          broadcast=True, prl=PRL).to_bytes()


def request(offer: bytes) -> bytes:
    """The client's REQUEST for what `offer` offered (built outside the timed part)."""
    packet = parse_packet(offer)
    return client_message(MessageType.REQUEST, mac=packet.chaddr, xid=packet.xid,
                          requested=packet.yiaddr, server_id=SERVER, broadcast=True,
                          prl=PRL).to_bytes()


def run(mode: str, exchanges: int, batch: int, db: Path) -> float:
    nodes: dict[MacAddress, NodeBoot] = {}

    def lookup(mac: MacAddress) -> NodeBoot | None:
        return nodes.get(mac)

    pool = (IPv4Address("10.1.0.10"), IPv4Address("10.1.255.250")) if mode == "pool" else None
    network = NetworkConfig(server_address=SERVER, subnet=IPv4Network("10.1.0.0/16"),
                            router=SERVER, dns=(SERVER,), lease_time=3600, pool=pool)
    store = LeaseStore(db, synchronous="NORMAL")
    discovers: list[bytes] = []
    for index in range(exchanges):
        if mode == "nodes":
            mac = MacAddress(numbered_mac(index))
            nodes[mac] = NodeBoot(name=f"n{index}", address=IPv4Address(BASE + index),
                                  bios_file="undionly.kpxe", uefi_file="ipxe.efi",
                                  ipxe_url=f"http://10.1.0.1:8080/boot/n{index}.ipxe")
        discovers.append(discover(index))
    source = (IPv4Address(0), 68)
    elapsed = 0.0

    def serve(datagrams: list[bytes]) -> list[bytes]:
        """What the service does for one batch of datagrams."""
        replies: list[bytes] = []
        for data in datagrams:
            now = time.time()
            packet = parse_packet(data)
            decision = respond(packet, now=now, config=network, lookup=lookup, leases=store,
                               source=source)
            if decision.lease_change is not None:
                store.stage(decision.lease_change)
            if decision.unknown_client is not None:
                store.record_unknown(decision.unknown_client, now)
            assert decision.reply is not None, decision.reason
            replies.append(decision.reply.to_bytes(max_size=packet.max_message_size))
        store.commit()
        return replies

    for first in range(0, exchanges, batch):
        started = time.process_time()
        offers = serve(discovers[first:first + batch])
        elapsed += time.process_time() - started
        requests = [request(offer) for offer in offers]
        started = time.process_time()
        serve(requests)
        elapsed += time.process_time() - started
    store.close()
    return elapsed / exchanges * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--exchanges", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mode", action="append", choices=["nodes", "pool"])
    args = parser.parse_args()
    for mode in args.mode or ["nodes", "pool"]:
        best = float("inf")
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                db = Path(tmp) / "leases.db"
                if args.profile:
                    profiler = cProfile.Profile()
                    profiler.enable()
                    us = run(mode, args.exchanges, args.batch, db)
                    profiler.disable()
                    stats = pstats.Stats(profiler, stream=sys.stdout)
                    stats.sort_stats("tottime").print_stats(30)
                else:
                    us = run(mode, args.exchanges, args.batch, db)
                best = min(best, us)
        print(f"{mode}: {best:.1f} µs of server CPU per DORA exchange (batch {args.batch}, "
              f"best of {args.repeat})")


if __name__ == "__main__":
    main()
