"""ONC RPC over TCP (RFC 5531) as the raw NFS clients speak it: the record marking, the call
header with AUTH_SYS as root, XDR opaques. `nfs3raw`, `nfs4raw` and `nfs4state` parse their
own replies; the framing is here once."""

from __future__ import annotations

import socket
import struct

AUTH_SYS = 1
CALL, RPC_VERSION = 0, 2
LAST_FRAGMENT = 0x80000000


def opaque(data: bytes) -> bytes:
    """XDR variable-length opaque: length, bytes, zero padding to four."""
    return struct.pack(">I", len(data)) + data + b"\0" * (-len(data) % 4)


def auth_sys(machine: bytes) -> bytes:
    """An AUTH_SYS credential for uid 0, gid 0, no groups, stamp 0."""
    body = struct.pack(">I", 0) + opaque(machine) + struct.pack(">III", 0, 0, 0)
    return struct.pack(">I", AUTH_SYS) + opaque(body)


def call_message(xid: int, program: int, version: int, proc: int, args: bytes, *,
                 machine: bytes) -> bytes:
    """A CALL message: header, AUTH_SYS credential, null verifier, then `args`."""
    return (struct.pack(">IIIIII", xid, CALL, RPC_VERSION, program, version, proc)
            + auth_sys(machine) + struct.pack(">II", 0, 0) + args)


def send_record(sock: socket.socket, msg: bytes) -> None:
    """`msg` as one record of one (last) fragment."""
    sock.sendall(struct.pack(">I", LAST_FRAGMENT | len(msg)) + msg)


def read_record(sock: socket.socket) -> bytes:
    """One record: its fragments joined, up to the one marked last."""
    data = b""
    while True:
        (header,) = struct.unpack(">I", read_exactly(sock, 4))
        data += read_exactly(sock, header & ~LAST_FRAGMENT)
        if header & LAST_FRAGMENT:
            return data


def read_exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by the server")
        buf += chunk
    return buf
