"""The DHCP codec: round trips, RFC 3396 long options, option overload, malformed input."""

from __future__ import annotations

import contextlib
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oneroot.errors import LocalProtocolError, MalformedPacket
from oneroot.proto.dhcp import (
    BootOp,
    DhcpOptions,
    DhcpPacket,
    MessageType,
    OptionCode,
    decode_suboptions,
    encode_suboptions,
    parse_packet,
)
from oneroot.proto.dhcp.packet import HEADER_SIZE

addresses = st.integers(0, 2**32 - 1).map(IPv4Address)
option_codes = st.integers(1, 254).filter(lambda c: c != OptionCode.OVERLOAD)
option_maps = st.dictionaries(option_codes, st.binary(max_size=600), max_size=12)


def _no_trailing_nul(max_size: int) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=max_size).map(lambda b: b.rstrip(b"\0"))


packets = st.builds(
    DhcpPacket,
    op=st.sampled_from(BootOp),
    xid=st.integers(0, 2**32 - 1),
    htype=st.integers(0, 255),
    hlen=st.integers(0, 16),
    hops=st.integers(0, 255),
    secs=st.integers(0, 2**16 - 1),
    flags=st.integers(0, 2**16 - 1),
    ciaddr=addresses, yiaddr=addresses, siaddr=addresses, giaddr=addresses,
    chaddr=st.binary(min_size=16, max_size=16),
    sname=_no_trailing_nul(64),
    file=_no_trailing_nul(128),
    options=option_maps.map(DhcpOptions),
)


@given(packets)
def test_round_trip(packet: DhcpPacket) -> None:
    assert parse_packet(packet.to_bytes()) == packet


@given(packets, st.integers(0, 1500))
def test_round_trip_with_max_size_keeps_options(packet: DhcpPacket, max_size: int) -> None:
    decoded = parse_packet(packet.to_bytes(max_size=max_size))
    assert decoded.options == packet.options
    # file/sname may have carried options; otherwise they are kept
    assert decoded.file in (packet.file, b"")
    assert decoded.sname in (packet.sname, b"")


@given(st.binary(max_size=700))
def test_random_bytes_raise_only_malformed(data: bytes) -> None:
    with contextlib.suppress(MalformedPacket):
        parse_packet(data)


def _discover(**options: bytes) -> DhcpPacket:
    return DhcpPacket(op=BootOp.REQUEST, xid=0x1234, chaddr=bytes.fromhex("525400123456"),
                      options=DhcpOptions([(OptionCode.MESSAGE_TYPE, b"\x01"),
                                           *((int(k[1:]), v) for k, v in options.items())]))


def test_long_option_is_split_and_concatenated() -> None:
    value = bytes(range(256)) * 2  # 512 bytes → three instances
    packet = _discover(o43=value)
    data = packet.to_bytes()
    options = data[HEADER_SIZE + 4 :]
    assert options[3:5] == bytes((43, 255))
    assert options[3 + 2 + 255 : 3 + 2 + 255 + 2] == bytes((43, 255))
    assert options[3 + 2 * 257 : 3 + 2 * 257 + 2] == bytes((43, 2))
    assert parse_packet(data).options[43] == value


def test_repeated_option_in_input_concatenates() -> None:
    raw = bytearray(_discover().to_bytes())
    start = HEADER_SIZE + 4 + 3
    raw[start : start + 1] = bytes((12, 2)) + b"ab" + bytes((12, 3)) + b"cde" + b"\xff"
    assert parse_packet(bytes(raw)).hostname == "abcde"


def test_overload_into_file_and_sname_when_client_size_is_small() -> None:
    packet = _discover(o43=b"x" * 250, o125=b"y" * 100, o224=b"z" * 50)
    data = packet.to_bytes(max_size=576)
    assert len(data) <= 576 - 28
    assert data[HEADER_SIZE + 4 : HEADER_SIZE + 7] == bytes((52, 1, 3))
    decoded = parse_packet(data)
    assert decoded.options == packet.options
    assert decoded.file == b"" and decoded.sname == b""


def test_overload_keeps_a_boot_file_in_use() -> None:
    packet = DhcpPacket(op=BootOp.REPLY, xid=1, file=b"pxelinux.0",
                        options=DhcpOptions({43: b"x" * 250, 125: b"y" * 40}))
    data = packet.to_bytes(max_size=576)
    assert len(data) <= 548
    decoded = parse_packet(data)
    assert decoded.file == b"pxelinux.0" and decoded.options == packet.options


def test_too_big_even_overloaded_is_sent_whole() -> None:
    packet = _discover(o43=b"x" * 1000)
    assert parse_packet(packet.to_bytes(max_size=576)).options == packet.options


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d[:239], "at least 240"),
        (lambda d: d[:236] + b"\0\0\0\0" + d[240:], "cookie"),
        (lambda d: b"\x03" + d[1:], "op"),
        (lambda d: d[:2] + b"\x11" + d[3:], "hardware address length"),
        (lambda d: d[:240] + bytes((12, 40)) + b"abc", "runs past"),
        (lambda d: d[:240] + bytes((12,)), "no length"),
        (lambda d: d[:240] + bytes((52, 1, 7, 255)), "option 52"),
        (lambda d: d[:240] + bytes((52, 2, 1, 1, 255)), "option 52"),
    ],
)
def test_malformed(mutate: object, message: str) -> None:
    data = _discover().to_bytes()
    with pytest.raises(MalformedPacket, match=message):
        parse_packet(mutate(data))  # type: ignore[operator]


def test_overload_option_in_file_that_runs_past_end_is_malformed() -> None:
    data = bytearray(_discover().to_bytes())
    data[240:243] = bytes((52, 1, 1))
    data[243] = 255
    file_start = 108
    data[file_start : file_start + 3] = bytes((12, 200, 0))
    with pytest.raises(MalformedPacket, match="in file"):
        parse_packet(bytes(data))


def test_missing_end_and_pad_are_tolerated() -> None:
    data = _discover(o12=b"n1").to_bytes().rstrip(b"\0")[:-1]  # strip padding and END
    assert parse_packet(data).hostname == "n1"


def test_typed_accessors() -> None:
    packet = _discover(o50=IPv4Address("10.0.0.5").packed, o54=IPv4Address("10.0.0.1").packed,
                       o55=bytes((1, 3, 67)), o57=b"\x05\xdc", o60=b"PXEClient:Arch:00007",
                       o77=b"iPXE", o93=b"\x00\x07", o97=b"\x00" + bytes(16), o82=b"\x01\x02ab")
    assert packet.message_type is MessageType.DISCOVER
    assert packet.requested_address == IPv4Address("10.0.0.5")
    assert packet.server_id == IPv4Address("10.0.0.1")
    assert packet.parameter_request_list == (1, 3, 67)
    assert packet.max_message_size == 1500
    assert packet.is_pxe_client and packet.is_ipxe
    assert packet.client_arch == 7
    assert packet.relay_agent_info == b"\x01\x02ab"
    assert str(packet.mac) == "52:54:00:12:34:56"


@pytest.mark.parametrize(("code", "value"), [(53, b""), (53, b"\x63"), (50, b"\x01\x02"),
                                             (93, b"\x00"), (57, b"\x01")])
def test_malformed_option_values_raise_malformed(code: int, value: bytes) -> None:
    packet = parse_packet(_discover().to_bytes()).__class__(
        op=BootOp.REQUEST, xid=1, options=DhcpOptions({code: value}))
    with pytest.raises(MalformedPacket):
        _ = (packet.message_type, packet.requested_address, packet.client_arch,
             packet.max_message_size)


def test_framing_codes_are_not_options() -> None:
    for code in (0, 52, 255):
        with pytest.raises(LocalProtocolError):
            DhcpOptions({code: b""})


def test_suboptions() -> None:
    encoded = encode_suboptions([(6, b"\x08"), (0xB0, b"\x01")])
    assert encoded == bytes((6, 1, 8, 0xB0, 1, 1, 255))
    assert decode_suboptions(43, encoded) == {6: b"\x08", 0xB0: b"\x01"}
    with pytest.raises(MalformedPacket):
        decode_suboptions(43, bytes((6, 5, 1)))
