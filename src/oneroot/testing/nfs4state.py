"""A small NFSv4.0 client that holds state (a client id, an open file) and reclaims it.

The host has no kernel NFS client, and libnfs' tools open and close within one call, so
nothing of theirs survives a server's failure. This client does what a node's kernel does
when its server fails over: it keeps writing numbered lines (`FILE_SYNC`, so an answer
means the line is on stable storage), and when the server goes away it reconnects to the
same address, establishes its client id again (same `nfs_client_id4`) and reclaims its open
(`CLAIM_PREVIOUS`), which a server in its grace period allows only to clients it knew.

    python -m oneroot.testing.nfs4state SERVER PATH --lines 100 --interval 0.1 --id node01

prints a JSON report: lines acknowledged, reclaims, the longest stall between two
acknowledged lines, and the NFS status a stranger's open got during the grace period.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from oneroot.testing.oncrpc import call_message, read_record, send_record

NFS_PROGRAM, NFS_V4 = 100003, 4
NULL, COMPOUND = 0, 1
OP_CLOSE, OP_GETFH, OP_LOOKUP, OP_OPEN, OP_OPEN_CONFIRM = 4, 10, 15, 18, 20
OP_PUTFH, OP_PUTROOTFH, OP_RENEW, OP_SETCLIENTID, OP_SETCLIENTID_CONFIRM = 22, 24, 30, 35, 36
OP_READ, OP_WRITE = 25, 38
NFS4_OK, NFS4ERR_ACCESS, NFS4ERR_GRACE = 0, 13, 10013
NFS4ERR_STALE_CLIENTID, NFS4ERR_STALE_STATEID, NFS4ERR_EXPIRED = 10022, 10023, 10011
NFS4ERR_BADSESSION_LIKE = (NFS4ERR_STALE_CLIENTID, NFS4ERR_STALE_STATEID, NFS4ERR_EXPIRED)
SHARE_ACCESS_BOTH, OPEN4_CREATE, UNCHECKED4 = 3, 1, 0
CLAIM_NULL, CLAIM_PREVIOUS = 0, 1
OPEN4_RESULT_CONFIRM = 2
FILE_SYNC4 = 2


class NfsStatusError(Exception):
    def __init__(self, op: int, status: int) -> None:
        super().__init__(f"op {op}: NFS4 status {status}")
        self.op = op
        self.status = status


class Packer:
    def __init__(self) -> None:
        self.buf = bytearray()

    def u32(self, v: int) -> Packer:
        self.buf += struct.pack(">I", v)
        return self

    def u64(self, v: int) -> Packer:
        self.buf += struct.pack(">Q", v)
        return self

    def opaque(self, data: bytes) -> Packer:
        self.u32(len(data))
        self.buf += data + b"\0" * (-len(data) % 4)
        return self

    def fixed(self, data: bytes) -> Packer:
        self.buf += data
        return self


class Unpacker:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def u32(self) -> int:
        (v,) = struct.unpack_from(">I", self.data, self.at)
        self.at += 4
        return int(v)

    def u64(self) -> int:
        (v,) = struct.unpack_from(">Q", self.data, self.at)
        self.at += 8
        return int(v)

    def fixed(self, n: int) -> bytes:
        out = self.data[self.at:self.at + n]
        self.at += n + (-n % 4)
        return out

    def opaque(self) -> bytes:
        return self.fixed(self.u32())

    def bitmap(self) -> list[int]:
        return [self.u32() for _ in range(self.u32())]


@dataclass(slots=True)
class Stateid:
    seqid: int
    other: bytes

    def pack(self, p: Packer) -> None:
        p.u32(self.seqid).fixed(self.other)

    @classmethod
    def unpack(cls, u: Unpacker) -> Stateid:
        return cls(u.u32(), u.fixed(12))


class Rpc:
    """ONC RPC over one TCP connection, AUTH_SYS as root."""

    def __init__(self, server: str, port: int = 2049, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((server, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.xid = random.randint(1, 1 << 30)

    def close(self) -> None:
        self.sock.close()

    def call(self, proc: int, args: bytes) -> Unpacker:
        self.xid += 1
        send_record(self.sock, call_message(self.xid, NFS_PROGRAM, NFS_V4, proc, args,
                                            machine=b"oneroot"))
        while True:
            reply = Unpacker(read_record(self.sock))
            if reply.u32() == self.xid:
                break
        if reply.u32() != 1 or reply.u32() != 0:
            raise ConnectionError("RPC reply not accepted")
        reply.u32()
        reply.opaque()  # verifier
        if reply.u32() != 0:
            raise ConnectionError("RPC call not executed")
        return reply



@dataclass(slots=True)
class OpenFile:
    fh: bytes
    stateid: Stateid


@dataclass(slots=True)
class Nfs4Client:
    """One NFSv4.0 client identity (`ident`), which survives reconnections."""

    server: str
    ident: str
    port: int = 2049
    verifier: bytes = field(default_factory=lambda: os.urandom(8))
    clientid: int = 0
    owner_seqid: int = 0
    rpc: Rpc | None = None

    def connect(self) -> None:
        if self.rpc is not None:
            self.rpc.close()
        self.rpc = Rpc(self.server, self.port)

    def compound(self, ops: list[tuple[int, bytes]]) -> list[Any]:
        """Run the ops; each op's parsed result in order (raises on the first error)."""
        assert self.rpc is not None
        p = Packer().opaque(b"").u32(0).u32(len(ops))
        for op, body in ops:
            p.u32(op).fixed(body)
        reply = self.rpc.call(COMPOUND, bytes(p.buf))
        reply.u32()  # overall status: the failing op's, read below
        reply.opaque()
        results = []
        for _ in range(reply.u32()):
            op, status = reply.u32(), reply.u32()
            if status != NFS4_OK:
                raise NfsStatusError(op, status)
            results.append(_RESULTS.get(op, _nothing)(reply))
        return results

    def establish(self) -> None:
        """SETCLIENTID + SETCLIENTID_CONFIRM with this client's identity."""
        body = (Packer().fixed(self.verifier).opaque(self.ident.encode()).u32(0x40000000)
                .opaque(b"tcp").opaque(b"0.0.0.0.0.0").u32(1).buf)
        ((self.clientid, confirm),) = self.compound([(OP_SETCLIENTID, bytes(body))])
        self.compound([(OP_SETCLIENTID_CONFIRM,
                        bytes(Packer().u64(self.clientid).fixed(confirm).buf))])
        self.owner_seqid = 0

    def _open_body(self, claim: bytes, *, create: bool) -> bytes:
        p = (Packer().u32(self.owner_seqid).u32(SHARE_ACCESS_BOTH).u32(0)
             .u64(self.clientid).opaque(b"oneroot-writer"))
        if create:
            p.u32(OPEN4_CREATE).u32(UNCHECKED4).u32(0).opaque(b"")  # empty fattr4
        else:
            p.u32(0)
        return bytes(p.buf) + claim

    def _finish_open(self, res: tuple[Stateid, int], fh: bytes) -> OpenFile:
        stateid, rflags = res
        self.owner_seqid += 1
        if rflags & OPEN4_RESULT_CONFIRM:
            confirm = Packer().opaque(fh)
            ops = [(OP_PUTFH, bytes(confirm.buf))]
            body = Packer()
            stateid.pack(body)
            body.u32(self.owner_seqid)
            ops.append((OP_OPEN_CONFIRM, bytes(body.buf)))
            stateid = self.compound(ops)[1]
            self.owner_seqid += 1
        return OpenFile(fh=fh, stateid=stateid)

    def open(self, path: str) -> OpenFile:
        """OPEN (create) `path` for writing: a new open, CLAIM_NULL."""
        parts = [p for p in path.split("/") if p]
        ops = [(OP_PUTROOTFH, b"")]
        ops += [(OP_LOOKUP, bytes(Packer().opaque(c.encode()).buf)) for c in parts[:-1]]
        claim = bytes(Packer().u32(CLAIM_NULL).opaque(parts[-1].encode()).buf)
        ops += [(OP_OPEN, self._open_body(claim, create=True)), (OP_GETFH, b"")]
        results = self.compound(ops)
        return self._finish_open(results[-2], results[-1])

    def reclaim(self, opened: OpenFile) -> OpenFile:
        """After the server restarted: OPEN with CLAIM_PREVIOUS on the file's handle."""
        claim = bytes(Packer().u32(CLAIM_PREVIOUS).u32(0).buf)  # delegation: none
        results = self.compound([(OP_PUTFH, bytes(Packer().opaque(opened.fh).buf)),
                                 (OP_OPEN, self._open_body(claim, create=False))])
        return self._finish_open(results[1], opened.fh)

    def handle(self, path: str) -> bytes:
        """The file handle of `path` (PUTROOTFH, LOOKUP each component, GETFH)."""
        ops = [(OP_PUTROOTFH, b"")]
        ops += [(OP_LOOKUP, bytes(Packer().opaque(c.encode()).buf))
                for c in path.split("/") if c]
        return bytes(self.compound([*ops, (OP_GETFH, b"")])[-1])

    def lookup_in(self, fh: bytes, name: str) -> bytes:
        """LOOKUP `name` in the directory with (perhaps forged) handle `fh`."""
        return bytes(self.compound([(OP_PUTFH, bytes(Packer().opaque(fh).buf)),
                                    (OP_LOOKUP, bytes(Packer().opaque(name.encode()).buf)),
                                    (OP_GETFH, b"")])[-1])

    def read(self, fh: bytes, count: int = 4096) -> bytes:
        """READ from offset 0 with the anonymous stateid (no open needed)."""
        body = Packer().u32(0).fixed(b"\0" * 12).u64(0).u32(count)
        return bytes(self.compound([(OP_PUTFH, bytes(Packer().opaque(fh).buf)),
                                    (OP_READ, bytes(body.buf))])[-1])

    def write(self, opened: OpenFile, offset: int, data: bytes) -> int:
        body = Packer()
        opened.stateid.pack(body)
        body.u64(offset).u32(FILE_SYNC4).opaque(data)
        results = self.compound([(OP_PUTFH, bytes(Packer().opaque(opened.fh).buf)),
                                 (OP_WRITE, bytes(body.buf))])
        count, committed = results[1]
        if committed != FILE_SYNC4 or count != len(data):
            raise NfsStatusError(OP_WRITE, -1)
        return int(count)


def _nothing(u: Unpacker) -> None:
    return None


def _open_result(u: Unpacker) -> tuple[Stateid, int]:
    stateid = Stateid.unpack(u)
    u.u32()
    u.u64()
    u.u64()  # change_info4
    rflags = u.u32()
    u.bitmap()
    if u.u32() != 0:  # a delegation: never asked for, never parsed
        raise NfsStatusError(OP_OPEN, -2)
    return stateid, rflags


def _write_result(u: Unpacker) -> tuple[int, int]:
    count, committed = u.u32(), u.u32()
    u.fixed(8)
    return count, committed


def _setclientid_result(u: Unpacker) -> tuple[int, bytes]:
    return u.u64(), u.fixed(8)


_RESULTS: dict[int, Callable[[Unpacker], Any]] = {
    OP_GETFH: lambda u: u.opaque(), OP_OPEN: _open_result, OP_OPEN_CONFIRM: Stateid.unpack,
    OP_WRITE: _write_result, OP_SETCLIENTID: _setclientid_result,
    OP_READ: lambda u: (u.u32(), u.opaque())[1],
    OP_CLOSE: Stateid.unpack,
}


@dataclass(slots=True)
class WriterReport:
    acknowledged: int = 0
    reclaims: int = 0
    longest_stall: float = 0.0
    reclaim_seconds: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def write_lines(client: Nfs4Client, path: str, *, lines: int, interval: float,
                deadline: float) -> WriterReport:
    """Write lines `1..lines` (`"%06d\\n"`), one each `interval`, each FILE_SYNC; reconnect
    and reclaim when the server goes away. Stops at `deadline` (monotonic)."""
    report = WriterReport()
    client.connect()
    client.establish()
    opened = client.open(path)
    last_ack = time.monotonic()
    n = 1
    while n <= lines and time.monotonic() < deadline:
        line = f"{n:06d}\n".encode()
        try:
            client.write(opened, (n - 1) * len(line), line)
        except (OSError, ConnectionError, NfsStatusError) as exc:
            report.errors.append(f"line {n}: {exc}")
            opened = _recover(client, opened, report, deadline)
            continue
        now = time.monotonic()
        report.longest_stall = max(report.longest_stall, now - last_ack)
        last_ack = now
        report.acknowledged = n
        n += 1
        time.sleep(interval)
    return report


def _recover(client: Nfs4Client, opened: OpenFile, report: WriterReport,
             deadline: float) -> OpenFile:
    started = time.monotonic()
    while time.monotonic() < deadline:
        try:
            client.connect()
            client.establish()
            reclaimed = client.reclaim(opened)
        except (OSError, ConnectionError, NfsStatusError) as exc:
            if len(report.errors) < 50:
                report.errors.append(f"recover: {exc}")
            time.sleep(0.5)
            continue
        report.reclaims += 1
        report.reclaim_seconds.append(round(time.monotonic() - started, 2))
        return reclaimed
    raise TimeoutError("no reclaim before the deadline")


def stranger_open(server: str, path: str) -> int:
    """The status a new client's new open gets (NFS4ERR_GRACE while the server is in grace)."""
    client = Nfs4Client(server, ident=f"stranger-{os.getpid()}-{random.random()}")
    try:
        client.connect()
        client.establish()
        client.open(path)
    except NfsStatusError as exc:
        return exc.status
    return NFS4_OK


def forge(server: str, path: str, hexfh: str) -> dict[str, object]:
    """PATH's own handle, then a READ through the handle `hexfh` (`{own}` is replaced by
    PATH's handle in hex): the NFS status, and the bytes read when the server answered."""
    client = Nfs4Client(server, ident=f"forger-{os.getpid()}")
    client.connect()
    client.establish()
    own = client.handle(path)
    out: dict[str, object] = {"own": own.hex()}
    try:
        out["read"] = client.read(bytes.fromhex(hexfh.format(own=own.hex()))).decode(
            errors="replace")
        out["status"] = NFS4_OK
    except NfsStatusError as exc:
        out["status"] = exc.status
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("server")
    parser.add_argument("path")
    parser.add_argument("--lines", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--id", default="oneroot-node")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--stranger", action="store_true",
                        help="only try a new client's new open of PATH; print its status")
    parser.add_argument("--forge", metavar="HEX",
                        help="print PATH's handle, then READ the file named by handle HEX "
                             "(HEX may contain {own} for PATH's handle bytes)")
    args = parser.parse_args()
    if args.stranger:
        print(json.dumps({"stranger_status": stranger_open(args.server, args.path)}))
        return
    if args.forge is not None:
        print(json.dumps(forge(args.server, args.path, args.forge)))
        return
    client = Nfs4Client(args.server, ident=args.id)
    report = write_lines(client, args.path, lines=args.lines, interval=args.interval,
                         deadline=time.monotonic() + args.timeout)
    print(json.dumps({"acknowledged": report.acknowledged, "reclaims": report.reclaims,
                      "longest_stall": round(report.longest_stall, 2),
                      "reclaim_seconds": report.reclaim_seconds,
                      "errors": report.errors[:20]}), flush=True)


if __name__ == "__main__":
    main()
