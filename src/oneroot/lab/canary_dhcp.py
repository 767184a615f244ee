"""The DHCP answers of a canary in a private namespace (`lab try` on a real network).

There the canary's DHCP never crosses into the server's namespace (the uplink passes only its
unicast traffic to the server's services, `lab.canarynet`): this process, inside the private
namespace, answers it with `oneroot serve`'s own sans-IO responder, from the same values
(`NetworkConfig`, the canary's `NodeBoot`, computed by `ops.lab_try` from the inventory), for
the canary's MAC only, always as a broadcast on the private bridge (the only client there):

    ip netns exec NS python -m oneroot.lab.canary_dhcp br0 '{"mac": ..., "config": ...}'

It keeps no leases: a canary's address is fixed in the inventory, as a node's is.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

from oneroot.errors import MalformedPacket
from oneroot.model.cluster import DhcpMode
from oneroot.net import MacAddress
from oneroot.proto.dhcp import (
    CLIENT_PORT,
    SERVER_PORT,
    NetworkConfig,
    NodeBoot,
    NoLeases,
    parse_packet,
    respond,
)

log = logging.getLogger(__name__)

_SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
_MAX_DATAGRAM = 65536


def canary_answer_doc(mac: MacAddress, config: NetworkConfig, node: NodeBoot) -> str:
    """The one argument the process takes: what it answers, and to whom (JSON)."""
    return json.dumps({
        "mac": str(mac),
        "config": {"server_address": str(config.server_address), "subnet": str(config.subnet),
                   "router": str(config.router) if config.router else None,
                   "dns": [str(a) for a in config.dns], "domain": config.domain,
                   "lease_time": config.lease_time,
                   "server_id": str(config.server_id) if config.server_id else None},
        "node": {"name": node.name, "address": str(node.address), "bios_file": node.bios_file,
                 "uefi_file": node.uefi_file, "ipxe_url": node.ipxe_url,
                 "bios_pxelinux": node.bios_pxelinux}})


def _address(value: object) -> ipaddress.IPv4Address | None:
    return None if value is None else ipaddress.IPv4Address(str(value))


def parse_answer_doc(text: str) -> tuple[MacAddress, NetworkConfig, NodeBoot]:
    doc: dict[str, Any] = json.loads(text)
    c: Mapping[str, Any] = doc["config"]
    n: Mapping[str, Any] = doc["node"]
    # Always full mode, no pool: the private segment has no other DHCP server to defer to.
    config = NetworkConfig(server_address=ipaddress.IPv4Address(c["server_address"]),
                           subnet=ipaddress.IPv4Network(c["subnet"]), router=_address(
                               c["router"]), dns=tuple(ipaddress.IPv4Address(a)
                                                       for a in c["dns"]),
                           domain=c["domain"], lease_time=int(c["lease_time"]),
                           mode=DhcpMode.FULL, pool=None, server_id=_address(c["server_id"]))
    node = NodeBoot(name=str(n["name"]), address=ipaddress.IPv4Address(n["address"]),
                    bios_file=str(n["bios_file"]), uefi_file=str(n["uefi_file"]),
                    ipxe_url=str(n["ipxe_url"]), bios_pxelinux=bool(n["bios_pxelinux"]))
    return MacAddress.parse(doc["mac"]), config, node


def answer(data: bytes, *, mac: MacAddress, config: NetworkConfig, node: NodeBoot
           ) -> bytes | None:
    """The reply to one datagram: only the canary's, as serve would decide it."""
    try:
        request = parse_packet(data)
        if request.mac != mac:
            return None
        decision = respond(request, now=time.time(), config=config,
                           lookup=lambda m: node if m == mac else None, leases=NoLeases())
    except MalformedPacket:
        return None
    return decision.reply.to_bytes() if decision.reply is not None else None


def serve_canary(interface: str, doc: str) -> None:
    mac, config, node = parse_answer_doc(doc)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, _SO_BINDTODEVICE, interface.encode())
    sock.bind(("0.0.0.0", SERVER_PORT))
    log.info("canary_dhcp.listen interface=%s mac=%s address=%s", interface, mac, node.address)
    with sock:
        while True:
            data, _peer = sock.recvfrom(_MAX_DATAGRAM)
            reply = answer(data, mac=mac, config=config, node=node)
            if reply is not None:
                sock.sendto(reply, ("255.255.255.255", CLIENT_PORT))
                log.info("canary_dhcp.reply mac=%s bytes=%d", mac, len(reply))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oneroot.lab.canary_dhcp",
                                     description="Answer a lab try canary's DHCP")
    parser.add_argument("interface")
    parser.add_argument("doc", help="JSON: mac, config, node")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        serve_canary(args.interface, args.doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
