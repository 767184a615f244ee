"""The one whiteout format (a `c 0 0` character device) and the opaque mark overlayfs reads."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from oneroot.fsutil.atomic import replace_entry
from oneroot.fsutil.nofollow import DIR_FLAGS

WHITEOUT_DEVICE = os.makedev(0, 0)
OPAQUE_XATTR = "trusted.overlay.opaque"


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == WHITEOUT_DEVICE


def make_whiteout_at(dir_fd: int, name: str) -> None:
    """Put a `c 0 0` whiteout at `name` in `dir_fd` (atomically replacing a file there)."""
    replace_entry(dir_fd, name, lambda tmp: os.mknod(tmp, 0o600 | stat.S_IFCHR,
                                                     WHITEOUT_DEVICE, dir_fd=dir_fd))


def make_whiteout(path: Path) -> None:
    """`make_whiteout_at` for a path whose parent is the server's own (a view's upper)."""
    fd = os.open(path.parent, DIR_FLAGS)
    try:
        make_whiteout_at(fd, path.name)
    finally:
        os.close(fd)


def fd_opaque(fd: int) -> bool:
    try:
        return os.getxattr(fd, OPAQUE_XATTR) == b"y"
    except OSError:
        return False


def set_opaque(directory: Path) -> None:
    """Mark a directory opaque: a union shows only its own entries, none from below."""
    os.setxattr(directory, OPAQUE_XATTR, b"y", follow_symlinks=False)


def is_opaque(directory: Path) -> bool:
    try:
        return os.getxattr(directory, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False
