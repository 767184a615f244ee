"""TFTP packet codec (RFC 1350, 2347 OACK): `parse_packet(bytes) -> Packet`, `Packet.to_bytes()`.

Wire layout, network byte order:

    RRQ/WRQ  | 01/02 | filename | 0 | mode | 0 | opt1 | 0 | value1 | 0 | ...
    DATA     | 03    | block (u16) | payload (0..n bytes)
    ACK      | 04    | block (u16)
    ERROR    | 05    | code (u16)  | message | 0
    OACK     | 06    | opt1 | 0 | value1 | 0 | ...

Strings are decoded as UTF-8 with `surrogateescape`, the same way Python decodes file names, so
any byte string round-trips exactly and a name maps onto the file system as the client sent it.
The codec is strict and symmetric: `parse_packet(p.to_bytes()) == p` for every packet, and every
byte string either parses to a packet whose `to_bytes()` gives it back, or raises
`MalformedPacket` (never `struct.error` or `IndexError`). Option names and modes keep their
case here; negotiation (`options.py`) compares them case-insensitively.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from oneroot.errors import LocalProtocolError, MalformedPacket

__all__ = [
    "Ack",
    "Data",
    "Error",
    "ErrorCode",
    "Opcode",
    "OptionAck",
    "Packet",
    "ReadRequest",
    "WriteRequest",
    "parse_packet",
]

_HEADER = struct.Struct("!HH")
_OPCODE = struct.Struct("!H")
MAX_BLOCK = 0xFFFF


class Opcode(enum.IntEnum):
    RRQ = 1
    WRQ = 2
    DATA = 3
    ACK = 4
    ERROR = 5
    OACK = 6


class ErrorCode(enum.IntEnum):
    NOT_DEFINED = 0
    FILE_NOT_FOUND = 1
    ACCESS_VIOLATION = 2
    DISK_FULL = 3
    ILLEGAL_OPERATION = 4
    UNKNOWN_TID = 5
    FILE_EXISTS = 6
    NO_SUCH_USER = 7
    OPTION_REFUSED = 8  # RFC 2347


Options = tuple[tuple[str, str], ...]


def _encode_str(text: str, what: str) -> bytes:
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"{what} {text!r} cannot be encoded") from exc
    if b"\0" in raw:
        raise LocalProtocolError(f"{what} {text!r} contains a NUL byte")
    return raw


def _decode_str(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _encode_strings(strings: list[tuple[str, str]]) -> bytes:
    return b"".join(_encode_str(s, what) + b"\0" for s, what in strings)


def _encode_options(options: Options) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name, value in options:
        out.append((name, "option name"))
        out.append((value, "option value"))
    return out


def _split_strings(body: bytes, what: str) -> list[str]:
    """Split a body made only of NUL-terminated strings."""
    if not body:
        return []
    if body[-1] != 0:
        raise MalformedPacket(f"{what}: last string is not NUL-terminated")
    return [_decode_str(part) for part in body[:-1].split(b"\0")]


def _pairs(strings: list[str], what: str) -> Options:
    if len(strings) % 2:
        raise MalformedPacket(f"{what}: option {strings[-1]!r} has no value")
    return tuple(zip(strings[0::2], strings[1::2], strict=True))


def _check_block(block: int) -> None:
    if not 0 <= block <= MAX_BLOCK:
        raise LocalProtocolError(f"block number {block} does not fit in 16 bits")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadRequest:
    filename: str
    mode: str
    options: Options = ()

    def to_bytes(self) -> bytes:
        strings = [(self.filename, "filename"), (self.mode, "mode"), *_encode_options(self.options)]
        return _OPCODE.pack(Opcode.RRQ) + _encode_strings(strings)


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteRequest:
    filename: str
    mode: str
    options: Options = ()

    def to_bytes(self) -> bytes:
        strings = [(self.filename, "filename"), (self.mode, "mode"), *_encode_options(self.options)]
        return _OPCODE.pack(Opcode.WRQ) + _encode_strings(strings)


@dataclass(frozen=True, slots=True, kw_only=True)
class Data:
    block: int
    data: bytes

    def to_bytes(self) -> bytes:
        _check_block(self.block)
        return _HEADER.pack(Opcode.DATA, self.block) + self.data


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    block: int

    def to_bytes(self) -> bytes:
        _check_block(self.block)
        return _HEADER.pack(Opcode.ACK, self.block)


@dataclass(frozen=True, slots=True, kw_only=True)
class Error:
    # An int, not only ErrorCode: peers send codes outside RFC 1350's table.
    code: int
    message: str = ""

    def to_bytes(self) -> bytes:
        _check_block(self.code)
        return _HEADER.pack(Opcode.ERROR, self.code) + _encode_strings([(self.message, "message")])


@dataclass(frozen=True, slots=True, kw_only=True)
class OptionAck:
    options: Options = ()

    def to_bytes(self) -> bytes:
        return _OPCODE.pack(Opcode.OACK) + _encode_strings(_encode_options(self.options))


Packet = ReadRequest | WriteRequest | Data | Ack | Error | OptionAck


def _parse_request(body: bytes, opcode: Opcode) -> ReadRequest | WriteRequest:
    what = opcode.name
    strings = _split_strings(body, what)
    if len(strings) < 2:
        raise MalformedPacket(f"{what}: needs a filename and a mode")
    filename, mode, *rest = strings
    options = _pairs(rest, what)
    if opcode is Opcode.RRQ:
        return ReadRequest(filename=filename, mode=mode, options=options)
    return WriteRequest(filename=filename, mode=mode, options=options)


def parse_packet(data: bytes) -> Packet:
    """Decode one datagram; raise `MalformedPacket` for anything that is not a TFTP packet."""
    if len(data) < 2:
        raise MalformedPacket(f"datagram of {len(data)} bytes is too short for an opcode")
    (raw_opcode,) = _OPCODE.unpack_from(data)
    try:
        opcode = Opcode(raw_opcode)
    except ValueError:
        raise MalformedPacket(f"unknown opcode {raw_opcode}") from None
    body = bytes(data[2:])
    match opcode:
        case Opcode.RRQ | Opcode.WRQ:
            return _parse_request(body, opcode)
        case Opcode.DATA:
            if len(body) < 2:
                raise MalformedPacket("DATA: no block number")
            return Data(block=int.from_bytes(body[:2], "big"), data=body[2:])
        case Opcode.ACK:
            if len(body) != 2:
                raise MalformedPacket(f"ACK: {len(data)} bytes, expected 4")
            return Ack(block=int.from_bytes(body, "big"))
        case Opcode.ERROR:
            if len(body) < 2:
                raise MalformedPacket("ERROR: no error code")
            strings = _split_strings(body[2:], "ERROR")
            if len(strings) != 1:
                raise MalformedPacket("ERROR: expected exactly one NUL-terminated message")
            return Error(code=int.from_bytes(body[:2], "big"), message=strings[0])
        case Opcode.OACK:
            return OptionAck(options=_pairs(_split_strings(body, "OACK"), "OACK"))
