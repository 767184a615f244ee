"""TFTP codec: round trips both ways, and a table of malformed inputs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oneroot.errors import LocalProtocolError, MalformedPacket
from oneroot.proto.tftp import (
    Ack,
    Data,
    Error,
    ErrorCode,
    Opcode,
    OptionAck,
    Packet,
    ReadRequest,
    WriteRequest,
    parse_packet,
)

# Strings as the codec decodes them: any bytes without NUL, via UTF-8 + surrogateescape.
wire_strings = st.binary(max_size=40).filter(lambda b: b"\0" not in b).map(
    lambda b: b.decode("utf-8", "surrogateescape")
)
options = st.lists(st.tuples(wire_strings, wire_strings), max_size=5).map(tuple)
u16 = st.integers(0, 0xFFFF)

packets: st.SearchStrategy[Packet] = st.one_of(
    st.builds(ReadRequest, filename=wire_strings, mode=wire_strings, options=options),
    st.builds(WriteRequest, filename=wire_strings, mode=wire_strings, options=options),
    st.builds(Data, block=u16, data=st.binary(max_size=600)),
    st.builds(Ack, block=u16),
    st.builds(Error, code=u16, message=wire_strings),
    st.builds(OptionAck, options=options),
)


@given(packets)
def test_packet_round_trip(packet: Packet) -> None:
    assert parse_packet(packet.to_bytes()) == packet


@given(packets, st.integers(min_value=0), st.binary(max_size=8))
def test_bytes_round_trip_or_malformed(packet: Packet, cut: int, noise: bytes) -> None:
    """A packet's bytes parse back to the same bytes; the same bytes cut short, with bytes
    appended, or replaced by noise either round-trip too or raise MalformedPacket (never
    another exception). Starting from valid bytes, not random ones: random bytes are almost
    never a TFTP packet, so a parser that refused everything would pass on them."""
    wire = packet.to_bytes()
    assert parse_packet(wire).to_bytes() == wire
    for data in (wire[:cut % (len(wire) + 1)], wire + noise, wire[:2] + noise, noise):
        try:
            parsed = parse_packet(data)
        except MalformedPacket:
            continue
        assert parsed.to_bytes() == data


@given(st.sampled_from(list(Opcode)), st.binary(max_size=60))
def test_any_body_after_a_valid_opcode(opcode: Opcode, body: bytes) -> None:
    data = opcode.to_bytes(2, "big") + body
    try:
        packet = parse_packet(data)
    except MalformedPacket:
        return
    assert packet.to_bytes() == data


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x00\x01pxelinux.0\x00octet\x00",
         ReadRequest(filename="pxelinux.0", mode="octet")),
        (b"\x00\x01f\x00octet\x00blksize\x001468\x00tsize\x000\x00",
         ReadRequest(filename="f", mode="octet", options=(("blksize", "1468"), ("tsize", "0")))),
        (b"\x00\x02up\x00netascii\x00", WriteRequest(filename="up", mode="netascii")),
        (b"\x00\x03\xff\xffabc", Data(block=65535, data=b"abc")),
        (b"\x00\x03\x00\x01", Data(block=1, data=b"")),
        (b"\x00\x04\x00\x00", Ack(block=0)),
        (b"\x00\x05\x00\x01File not found\x00",
         Error(code=ErrorCode.FILE_NOT_FOUND, message="File not found")),
        (b"\x00\x05\x00\x63\x00", Error(code=99, message="")),
        (b"\x00\x06blksize\x00512\x00", OptionAck(options=(("blksize", "512"),))),
        (b"\x00\x06", OptionAck()),
    ],
)
def test_known_packets(data: bytes, expected: Packet) -> None:
    assert parse_packet(data) == expected
    assert expected.to_bytes() == data


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"\x00\x00",
        b"\x00\x07",
        b"\xff\xff",
        b"\x00\x01",  # RRQ without strings
        b"\x00\x01file\x00",  # no mode
        b"\x00\x01file\x00octet",  # mode not terminated
        b"\x00\x01file\x00octet\x00blksize\x00",  # option without value
        b"\x00\x03\x00",  # DATA without a full block number
        b"\x00\x04\x00",  # short ACK
        b"\x00\x04\x00\x01\x00",  # long ACK
        b"\x00\x05\x00",  # ERROR without code
        b"\x00\x05\x00\x01",  # ERROR without message
        b"\x00\x05\x00\x01oops",  # message not terminated
        b"\x00\x05\x00\x01a\x00b\x00",  # two messages
        b"\x00\x06tsize\x00",  # OACK option without value
    ],
)
def test_malformed(data: bytes) -> None:
    with pytest.raises(MalformedPacket):
        parse_packet(data)


@pytest.mark.parametrize(
    "packet",
    [
        ReadRequest(filename="a\0b", mode="octet"),
        OptionAck(options=(("blksize", "5\x0012"),)),
        Ack(block=65536),
        Data(block=-1, data=b""),
        Error(code=70000, message=""),
    ],
)
def test_unencodable_is_our_mistake(packet: Packet) -> None:
    with pytest.raises(LocalProtocolError):
        packet.to_bytes()


def test_non_ascii_filename_maps_like_the_file_system() -> None:
    raw = b"\x00\x01caf\xc3\xa9/\xff\x00octet\x00"
    packet = parse_packet(raw)
    assert isinstance(packet, ReadRequest)
    assert packet.filename == "café/\udcff"
    assert packet.to_bytes() == raw
