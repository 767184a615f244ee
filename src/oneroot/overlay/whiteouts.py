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

import contextlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

WH_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"


@dataclass(slots=True)
class NormalizeReport:
    converted: list[str] = field(default_factory=list)
    opaque: list[str] = field(default_factory=list)


def normalize_whiteouts(upper: Path) -> NormalizeReport:
    """Convert every fuse-overlayfs whiteout under `upper` into the one format."""
    report = NormalizeReport()
    try:
        top = os.open(upper, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return report
    try:
        _walk(top, "", report)
    finally:
        os.close(top)
    return report


def _walk(dir_fd: int, rel: str, report: NormalizeReport) -> None:
    with os.scandir(dir_fd) as entries:
        names = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
    for name, is_dir in names:
        if is_dir:
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
            try:
                _walk(child, f"{rel}{name}/", report)
            finally:
                os.close(child)
            continue
        if not name.startswith(WH_PREFIX):
            continue
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode) or st.st_size != 0:
            continue  # not a fuse-overlayfs whiteout (it writes empty regular files)
        if name == OPAQUE_MARKER:
            os.setxattr(dir_fd, OPAQUE_XATTR, b"y")
            os.unlink(name, dir_fd=dir_fd)
            report.opaque.append(rel or "/")
            continue
        target = name[len(WH_PREFIX):]
        with contextlib.suppress(FileNotFoundError):
            existing = os.stat(target, dir_fd=dir_fd, follow_symlinks=False)
            if not (stat.S_ISCHR(existing.st_mode) and existing.st_rdev == 0):
                continue  # the node re-created the file after deleting it: the file wins
            os.unlink(name, dir_fd=dir_fd)
            continue
        os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(0, 0), dir_fd=dir_fd)
        os.unlink(name, dir_fd=dir_fd)
        report.converted.append(rel + target)
