"""One whiteout format everywhere: turn fuse-overlayfs's `.wh.NAME` files into `c 0 0` devices.

fuse-overlayfs (1.10) writes a `.wh.NAME` file instead of a `c 0 0` device when it deletes a
file it had copied up and `renameat2(RENAME_WHITEOUT)` fails — as it always does on NFS —
because it then skips `mknod` (assuming no permission). It reads both forms; kernel overlayfs
(the server-side union, an ephemeral node's lower) reads only devices. So before a node boots,
its layer is normalised: `.wh.NAME` → `NAME` as `c 0 0`, `.wh..wh..opq` → the opaque xattr.
Never while the node runs: the fuse daemon owns the layer then.

Walks with directory file descriptors and never follows a symlink (a node's root user can
plant links in its own layer).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from oneroot.fsutil import (
    DIR_FLAGS,
    OPAQUE_XATTR,
    WHITEOUT_DEVICE,
    is_whiteout,
    lstat_at,
    walk,
)

WH_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"


@dataclass(slots=True)
class NormalizeReport:
    converted: list[str] = field(default_factory=list)
    opaque: list[str] = field(default_factory=list)


def normalize_whiteouts(upper: Path) -> NormalizeReport:
    """Convert every fuse-overlayfs whiteout under `upper` into the one format. The walk is
    bounded in depth (`oneroot.fsutil.walk`) and never follows a link."""
    report = NormalizeReport()
    try:
        top = os.open(upper, DIR_FLAGS)
    except FileNotFoundError:
        return report
    try:
        for parts, st, pfd in walk(top):
            name = parts[-1]
            if name.startswith(WH_PREFIX) and stat.S_ISREG(st.st_mode) and st.st_size == 0:
                # fuse-overlayfs writes empty regular files; anything else is the node's own
                _convert(pfd, name, "".join(f"{p}/" for p in parts[:-1]), report)
    finally:
        os.close(top)
    return report


def _convert(dir_fd: int, name: str, rel: str, report: NormalizeReport) -> None:
    if name == OPAQUE_MARKER:
        os.setxattr(dir_fd, OPAQUE_XATTR, b"y")
        os.unlink(name, dir_fd=dir_fd)
        report.opaque.append(rel or "/")
        return
    target = name[len(WH_PREFIX):]
    existing = lstat_at(dir_fd, target)
    if existing is not None:
        if is_whiteout(existing):
            os.unlink(name, dir_fd=dir_fd)
        return  # else the node re-created the file after deleting it: the file wins
    os.mknod(target, stat.S_IFCHR | 0o600, WHITEOUT_DEVICE, dir_fd=dir_fd)
    os.unlink(name, dir_fd=dir_fd)
    report.converted.append(rel + target)
