"""Write the hand-made seed inputs of each target into fuzz/corpus/TARGET/seed-*.

    python fuzz/seeds.py

The committed corpus is these seeds plus the inputs of crashes that were found and fixed
(`crash-*`, kept as regression cases). Seeds deliberately stop short of each planted bug (see
targets.py): the fuzzer must find those itself.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address
from pathlib import Path

from oneroot.proto import dhcp, tftp

CORPUS = Path(__file__).resolve().parent / "corpus"


def _dhcp_packets() -> list[bytes]:
    pxe = {55: bytes((1, 3, 6, 12, 43, 60, 66, 67, 175)), 57: b"\x05\xc0",
           60: b"PXEClient:Arch:00007:UNDI:003016", 93: b"\x00\x07", 94: b"\x01\x03\x10",
           97: b"\x00" + bytes(range(16))}
    known = bytes.fromhex("525400000001")
    stranger = bytes.fromhex("5254000000aa")
    packets = [
        dhcp.DhcpPacket(op=dhcp.BootOp.REQUEST, xid=1, chaddr=known,
                        options=dhcp.DhcpOptions({53: b"\x01", **pxe})),
        dhcp.DhcpPacket(op=dhcp.BootOp.REQUEST, xid=2, chaddr=known,
                        options=dhcp.DhcpOptions({53: b"\x03", 50: bytes((10, 0, 0, 11)),
                                                  54: bytes((10, 0, 0, 1)), 77: b"iPXE", **pxe})),
        dhcp.DhcpPacket(op=dhcp.BootOp.REQUEST, xid=3, chaddr=stranger,
                        giaddr=IPv4Address("10.0.0.254"),
                        options=dhcp.DhcpOptions({53: b"\x01", 82: b"\x01\x04abcd\x02\x02xy"})),
        dhcp.DhcpPacket(op=dhcp.BootOp.REQUEST, xid=4, chaddr=stranger,
                        options=dhcp.DhcpOptions({53: b"\x04", 50: bytes((10, 0, 0, 100)),
                                                  54: bytes((10, 0, 0, 1))})),
        dhcp.DhcpPacket(op=dhcp.BootOp.REQUEST, xid=5, chaddr=stranger,
                        ciaddr=IPv4Address("10.0.0.100"), options=dhcp.DhcpOptions({53: b"\x07"})),
        dhcp.DhcpPacket(op=dhcp.BootOp.REQUEST, xid=6, chaddr=stranger,
                        options=dhcp.DhcpOptions({53: b"\x08"})),
        dhcp.DhcpPacket(op=dhcp.BootOp.REPLY, xid=9,
                        options=dhcp.DhcpOptions({53: b"\x02", 43: b"x" * 250, 125: b"y" * 100})),
    ]
    return [p.to_bytes() for p in packets]


def _relayed_request() -> bytes:
    """The known node's REQUEST for its own address through a relay on its own segment (ACKed:
    a relayed node is served only from a giaddr in its subnet)."""
    return dhcp.DhcpPacket(op=dhcp.BootOp.REQUEST, xid=10, chaddr=bytes.fromhex("525400000001"),
                           giaddr=IPv4Address("10.0.0.254"),
                           options=dhcp.DhcpOptions({53: b"\x03", 50: bytes((10, 0, 0, 11)),
                                                     54: bytes((10, 0, 0, 1))})).to_bytes()


def _framed(packets: list[bytes], config: int) -> bytes:
    """dhcp_responder's input: a config byte, then runs of (size, port bit, time step, packet)."""
    out = bytes((config,))
    for packet in packets:
        out += struct.pack(">HBB", len(packet), 0, 5) + packet
    return out


def _decline_run() -> list[bytes]:
    """A pool client takes 10.0.0.100 (DISCOVER, REQUEST), then declines it."""
    mac = bytes.fromhex("5254000000aa")
    server = {54: bytes((10, 0, 0, 1))}
    return [dhcp.DhcpPacket(op=dhcp.BootOp.REQUEST, xid=n, chaddr=mac,
                            options=dhcp.DhcpOptions(options)).to_bytes()
            for n, options in enumerate(({53: b"\x01"},
                                         {53: b"\x03", 50: bytes((10, 0, 0, 100)), **server},
                                         {53: b"\x04", 50: bytes((10, 0, 0, 100)), **server}))]


def _tftp_packets() -> list[bytes]:
    return [p.to_bytes() for p in (
        tftp.ReadRequest(filename="pxelinux.0", mode="octet"),
        tftp.ReadRequest(filename="pxelinux.cfg/01-52-54-00-00-00-01", mode="netascii",
                         options=(("tsize", "0"), ("blksize", "1468"), ("windowsize", "16"),
                                  ("timeout", "1"))),
        tftp.WriteRequest(filename="up", mode="octet", options=(("tsize", "123"),)),
        tftp.Data(block=65535, data=bytes(range(64))),
        tftp.Ack(block=1),
        tftp.Error(code=1, message="File not found"),
        tftp.OptionAck(options=(("blksize", "1468"), ("tsize", "42"))),
    )]


def _transfers() -> list[bytes]:
    # content size (2 bytes: x256), extra bytes, mode, options (count, then name/value pairs),
    # window config, then events: 0 = ACK(next 2 bytes), 1 = junk, 2/3 = timer
    plain = b"\x00\x03" + b"\x00" + b"\x00" + b"\x00" + b"\x00" + b"".join(
        b"\x00" + n.to_bytes(2, "big") for n in range(0, 8))
    window = (b"\x00\x08" + b"\x00" + b"\x00" + b"\x02" + b"\x00\x00\x04\x00" + b"\x02\x00\x04"
              + b"\x01" + b"\x00\x00\x00" + b"\x02" + b"\x00\x00\x04" + b"\x00\x00\x08")
    return [plain, window, b"\x00\x01\x05\x01\x00"]


def _specs() -> list[bytes]:
    return [s.encode() for s in (
        "10.0.0.1:/:ro;10.0.0.1:/var/state/systems/node01;rw",
        "10.0.0.1:/:ro;10.0.0.1:/var/state/systems/node02;ro;tmpfs",
        "[fd00::1]:/:vers=4.2;10.0.0.1:/var/state/systems/node01;ro;tmpfs:mode=1777,size=1g",
        "server.example:/srv/image:ro,vers=3;tmpfs",
        "10.0.0.1:/var;tmpfs;ro",
    )]


def _names() -> list[bytes]:
    return [b"node01.ipxe", b"pxelinux.cfg/default", b"../secret", b"out", b"outdir/secret",
            b"in", b"./node01.ipxe"]


def main() -> None:
    seeds = {
        "dhcp_codec": _dhcp_packets(),
        "tftp_codec": _tftp_packets(),
        "dhcp_responder": [_framed(_dhcp_packets()[:2], 0), _framed(_dhcp_packets()[2:6], 0),
                           _framed(_dhcp_packets(), 2), _framed(_decline_run(), 0),
                           _framed([_relayed_request()], 0)],
        "tftp_transfer": _transfers(),
        "http_resolver": _names(),
        "rootspec": _specs(),
    }
    for target, inputs in seeds.items():
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for number, data in enumerate(inputs):
            (folder / f"seed-{number:02d}").write_bytes(data)


if __name__ == "__main__":
    main()
