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
A path that exists but is not a plain directory (a symlink, a file) is refused, not replaced.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from oneroot.errors import ConfigError
from oneroot.fsutil.whiteout import (
    OPAQUE_XATTR,
    WHITEOUT_DEVICE,
    is_opaque,
    is_whiteout,
    make_whiteout,
    set_opaque,
)

__all__ = ["OPAQUE_XATTR", "WHITEOUT_DEVICE", "DirSpec", "LayerDirs", "ensure_dir",
           "ensure_layer", "is_opaque", "is_whiteout", "make_whiteout", "set_opaque"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DirSpec:
    path: Path
    mode: int
    uid: int = 0
    gid: int = 0


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

    def specs(self) -> tuple[DirSpec, ...]:
        specs = [DirSpec(path=self.root, mode=0o755)]
        if self.upper != self.root:
            specs.append(DirSpec(path=self.upper, mode=0o755))
        if self.work is not None:
            specs.append(DirSpec(path=self.work, mode=0o700))
        return tuple(specs)


def ensure_dir(spec: DirSpec) -> bool:
    """Create `spec.path` (parents 0755 root) or repair its owner/mode in place.

    True when anything changed. Never follows a symlink at the final component.
    """
    changed = False
    try:
        st = os.lstat(spec.path)
    except FileNotFoundError:
        if not spec.path.parent.is_dir():
            ensure_dir(DirSpec(path=spec.path.parent, mode=0o755))
        os.mkdir(spec.path, spec.mode)
        st = os.lstat(spec.path)
        changed = True
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(
            f"{spec.path} exists but is not a directory",
            hint="move it away; oneroot does not replace files it did not create")
    if (st.st_uid, st.st_gid) != (spec.uid, spec.gid):
        os.lchown(spec.path, spec.uid, spec.gid)
        changed = True
    if stat.S_IMODE(st.st_mode) != spec.mode:
        os.chmod(spec.path, spec.mode)  # follows no link: the path is a directory (checked)
        changed = True
    return changed


def ensure_layer(dirs: LayerDirs) -> bool:
    """Create or repair a layer's directories; True when anything changed. Idempotent."""
    changed = False
    for spec in dirs.specs():
        changed |= ensure_dir(spec)
    return changed
