"""The ONC RPC framing the raw NFS clients share (`oneroot.testing.oncrpc`), over a socket
pair: records split in fragments are joined, a call's header is where a server reads it."""

from __future__ import annotations

import socket
import struct

import pytest

from oneroot.testing.oncrpc import call_message, opaque, read_record, send_record


def test_a_record_in_fragments_is_joined() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(struct.pack(">I", 3) + b"abc" + struct.pack(">I", 0x80000002) + b"de")
        send_record(a, b"next")
        assert read_record(b) == b"abcde"
        assert read_record(b) == b"next"


def test_a_closed_connection_mid_record_is_an_error() -> None:
    a, b = socket.socketpair()
    with b:
        a.sendall(struct.pack(">I", 0x80000010) + b"short")
        a.close()
        with pytest.raises(ConnectionError):
            read_record(b)


def test_the_call_header() -> None:
    msg = call_message(7, 100003, 4, 1, b"ARGS", machine=b"node")
    assert struct.unpack(">IIIIII", msg[:24]) == (7, 0, 2, 100003, 4, 1)
    cred_flavor, cred_len = struct.unpack(">II", msg[24:32])
    body = msg[32:32 + cred_len]
    assert cred_flavor == 1 and body[4:8] == struct.pack(">I", 4) and body[8:12] == b"node"
    assert struct.unpack(">III", body[12:24]) == (0, 0, 0)  # uid 0, gid 0, no groups
    assert msg[32 + cred_len:] == struct.pack(">II", 0, 0) + b"ARGS"  # null verifier
    assert opaque(b"abcde") == struct.pack(">I", 5) + b"abcde\0\0\0"
