"""The DHCP answers of a canary in a private namespace (`lab try` on a real network).

There the canary's DHCP never crosses into the server's namespace (the uplink passes only its
unicast traffic to the server's services, `lab.canarynet`): this process, inside the private
namespace, answers it with `oneroot serve`'s own sans-IO responder, from the same values
(`NetworkConfig`, the canary's `NodeBoot`, computed by `ops.lab_try` from the inventory), for
the canary's MAC only, always as a broadcast on the private bridge (the only client there):

    ip netns exec NS python -m oneroot.lab.canary_dhcp br0 '{"mac": ..., "config": ...}'

It keeps no leases: a canary's address is fixed in the inventory, as a node's is.

Renewals: at T1 (or on SIGUSR1) a client sends its REQUEST by unicast to the server id (the
server's address and MAC), which the private bridge would carry to the uplink, where nothing
answers DHCP (serve's DHCP sockets are bound to the real interface, and the uplink's guard
drops it). So the bridge is made promiscuous for one packet socket whose kernel filter passes
only IPv4 UDP to port 67: it sees those unicasts, and they are answered like the broadcasts
(the client takes a broadcast ACK). DHCP never crosses the uplink either way: the private
namespace's `bridge` table (`render.canarynet.render_private_fence`) drops UDP 67/68 there.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ipaddress
import json
import logging
import selectors
import socket
import struct
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
_ETH_P_IP = 0x0800
_SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
_SOL_PACKET, _PACKET_ADD_MEMBERSHIP, _PACKET_MR_PROMISC = 263, 1, 1
_PACKET_OTHERHOST = 3  # sockaddr_ll.sll_pkttype: a unicast frame to another host's MAC
# Classic BPF from the IP header on: IPv4 UDP, unfragmented, to the DHCP server port.
_TO_SERVER_PORT = [
    (0x30, 0, 0, 9), (0x15, 0, 6, socket.IPPROTO_UDP),  # ldb [9]; jeq UDP else drop
    (0x28, 0, 0, 6), (0x45, 4, 0, 0x1FFF),  # ldh [6]; jset fragment offset: drop
    (0xB1, 0, 0, 0), (0x48, 0, 0, 2),  # ldxb 4*([0]&0xf); ldh [x+2]: destination port
    (0x15, 0, 1, SERVER_PORT), (0x06, 0, 0, 0xFFFF), (0x06, 0, 0, 0),  # 67: accept; drop
]


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


def unicast_socket(interface: str) -> socket.socket:
    """A packet socket on the (now promiscuous) bridge `interface` that gets the IPv4 UDP
    datagrams to port 67 the bridge forwards to another host: the canary's renewals."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)  # nothing until bound
    code = b"".join(struct.pack("HBBI", *insn) for insn in _TO_SERVER_PORT)
    buffer = ctypes.create_string_buffer(code)
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER,
                    struct.pack("HL", len(_TO_SERVER_PORT), ctypes.addressof(buffer)))
    sock.bind((interface, _ETH_P_IP))
    sock.setsockopt(_SOL_PACKET, _PACKET_ADD_MEMBERSHIP, struct.pack(
        "iHH8s", socket.if_nametoindex(interface), _PACKET_MR_PROMISC, 0, b""))
    return sock


def unicast_payload(packet: bytes, address: tuple[object, ...]) -> bytes | None:
    """The UDP payload of an IPv4 `packet` the bridge forwarded to another host, else None
    (broadcasts come through the UDP socket)."""
    if len(address) < 3 or address[2] != _PACKET_OTHERHOST or len(packet) < 28:
        return None
    header = (packet[0] & 0x0F) * 4
    if packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_UDP or len(packet) < header + 8:
        return None
    return packet[header + 8:]


def serve_canary(interface: str, doc: str) -> None:
    mac, config, node = parse_answer_doc(doc)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, _SO_BINDTODEVICE, interface.encode())
    sock.bind(("0.0.0.0", SERVER_PORT))
    unicast = unicast_socket(interface)
    log.info("canary_dhcp.listen interface=%s mac=%s address=%s", interface, mac, node.address)
    with sock, unicast, selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        selector.register(unicast, selectors.EVENT_READ)
        while True:
            for key, _events in selector.select():
                ready = unicast if key.fileobj is unicast else sock
                data, peer = ready.recvfrom(_MAX_DATAGRAM)
                payload = unicast_payload(data, peer) if ready is unicast else data
                reply = answer(payload, mac=mac, config=config, node=node) if payload else None
                if reply is not None:
                    sock.sendto(reply, ("255.255.255.255", CLIENT_PORT))
                    log.info("canary_dhcp.reply mac=%s bytes=%d unicast=%s", mac, len(reply),
                             ready is unicast)


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
