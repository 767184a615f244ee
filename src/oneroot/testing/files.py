"""`tree_snapshot(dir)`: every entry below a directory with its mode and content, to assert
that an attack left the server's files exactly as they were."""

from __future__ import annotations

import os
import stat
from pathlib import Path

Snapshot = dict[str, tuple[int, int, int, bytes | None]]


def tree_snapshot(root: Path) -> Snapshot:
    """{relative path: (mode, uid, gid, content of a regular file)}, `root` itself as `.`;
    never follows a link."""
    def one(p: Path) -> tuple[int, int, int, bytes | None]:
        st = p.lstat()
        return (st.st_mode, st.st_uid, st.st_gid,
                p.read_bytes() if stat.S_ISREG(st.st_mode) else None)

    out = {".": one(root)}
    for top, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            p = Path(top) / name
            out[str(p.relative_to(root))] = one(p)
    return out
