"""The oneroot DHCP server as the bench runs it: every 02:00:00:xx:xx:xx MAC is a node
(`--mode nodes`, the product's case) or unknown with a discovery pool (`--mode pool`)."""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from oneroot.inventory.leases import LeaseStore
from oneroot.net import MacAddress
from oneroot.proto.dhcp import NetworkConfig, NodeBoot
from oneroot.serve.dhcp import DhcpService


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--interface", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"])
    parser.add_argument("--mode", default="nodes", choices=["nodes", "pool"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    server = IPv4Address("10.1.0.1")
    base = int(IPv4Address("10.1.0.10"))

    @functools.lru_cache(maxsize=4096)  # as the product's BootCatalog.dhcp_lookup
    def lookup(mac: MacAddress) -> NodeBoot | None:
        if args.mode != "nodes" or mac.packed[:3] != b"\x02\x00\x00":
            return None
        index = int.from_bytes(mac.packed[3:], "big")
        if index > 65000:
            return None
        return NodeBoot(name=f"n{index}", address=IPv4Address(base + index),
                        bios_file="undionly.kpxe", uefi_file="ipxe.efi",
                        ipxe_url=f"http://10.1.0.1:8080/boot/n{index}.ipxe")

    pool = (IPv4Address("10.1.0.10"), IPv4Address("10.1.255.250")) if args.mode == "pool" \
        else None
    network = NetworkConfig(server_address=server, subnet=IPv4Network("10.1.0.0/16"),
                            router=server, dns=(server,), lease_time=3600, pool=pool)
    store = LeaseStore(Path(args.db), synchronous=args.synchronous)
    service = DhcpService(interface=args.interface, server_address=server, network=network,
                          lookup=lookup, leases=store, on_event=lambda event: None)
    asyncio.run(service.run())


if __name__ == "__main__":
    main()
