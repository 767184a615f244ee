"""Layer directories on the server and the one whiteout format (a `c 0 0` character device).

Layout, decided once for every layer oneroot manages:

    <state_dir>/<node>/          root:root 0755   the node's rw layer, the directory in `root=`
                       upper/    root:root 0755   the node's files: becomes the node's `/`
                       work/     root:root 0700   the union's scratch dir (same fs as upper,
                                                  left to overlayfs / fuse-overlayfs)
    <group_dir>/<group>/         root:root 0755   a group's read-only layer: the group's files
                                                  directly (no upper/, no work/), because the
                                                  initramfs uses a read-only layer's mount as a
                                                  lowerdir as it is

Directories are created once and repaired in place (owner, mode); they are never removed and
recreated, because an NFS server that exports them would hand clients stale file handles.
A layer's own directory that exists but is not a plain directory (a symlink, a file) is
refused, not replaced; `upper/` and `work/` inside a node's directory, which the node can
write, are made afresh when the node put something else (a link) in their place.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from oneroot.errors import ConfigError
from oneroot.fsutil import DirAttrs, ensure_fresh_dir, lstat_at, open_dir
from oneroot.fsutil.whiteout import (
    OPAQUE_XATTR,
    WHITEOUT_DEVICE,
    is_opaque,
    is_whiteout,
    make_whiteout,
    set_opaque,
)

__all__ = ["OPAQUE_XATTR", "WHITEOUT_DEVICE", "LayerDirs", "ensure_layer", "is_opaque",
           "is_whiteout", "make_whiteout", "set_opaque"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerDirs:
    """A managed layer's directories: `upper` holds the layer's files (the node's `upper/`,
    or the group dir itself); `work` is None for read-only (group) layers."""

    root: Path
    upper: Path
    work: Path | None

    @classmethod
    def node(cls, state_dir: Path, name: str) -> LayerDirs:
        root = state_dir / name
        return cls(root=root, upper=root / "upper", work=root / "work")

    @classmethod
    def group(cls, group_dir: Path, name: str) -> LayerDirs:
        root = group_dir / name
        return cls(root=root, upper=root, work=None)


def _ensure(pfd: int, name: str, attrs: DirAttrs, *, shown: Path, replace: bool) -> tuple[
        int, bool]:
    """A descriptor of the directory `name` in `pfd`, made or repaired (owner, mode) in place,
    and whether anything changed. Something else standing there is refused, or with
    `replace` (an entry oneroot owns in a node-writable directory) removed and made afresh."""
    before = lstat_at(pfd, name)
    if before is not None and not stat.S_ISDIR(before.st_mode) and not replace:
        raise ConfigError(f"{shown} exists but is not a directory",
                          hint="move it away; oneroot does not replace files it did not create")
    fd = ensure_fresh_dir(pfd, name, attrs, shown=str(shown))
    changed = before is None or not stat.S_ISDIR(before.st_mode) or (
        stat.S_IMODE(before.st_mode), before.st_uid, before.st_gid) != (
        attrs.mode, attrs.uid, attrs.gid)
    return fd, changed


def ensure_layer(dirs: LayerDirs) -> bool:
    """Create or repair a layer's directories; True when anything changed. Idempotent.

    The layer's own directory (in the state or group dir, which no node writes) must be a
    plain directory. Below it `upper/` and `work/` are written by the node but owned by
    oneroot: a link, file or device the node put in their place is removed, never followed,
    and a fresh directory made. A state dir oneroot creates is private (0700).
    """
    parent = dirs.root.parent
    if not parent.exists():
        parent.mkdir(mode=0o700 if dirs.work is not None else 0o755, parents=True)
    with open_dir(parent) as pfd:
        root_fd, changed = _ensure(pfd, dirs.root.name, DirAttrs(mode=0o755), shown=dirs.root,
                                   replace=False)
    try:
        below = [(dirs.upper, 0o755)] if dirs.upper != dirs.root else []
        if dirs.work is not None:
            below.append((dirs.work, 0o700))
        for path, mode in below:
            fd, more = _ensure(root_fd, path.name, DirAttrs(mode=mode), shown=path,
                               replace=True)
            os.close(fd)
            changed |= more
    finally:
        os.close(root_fd)
    return changed
