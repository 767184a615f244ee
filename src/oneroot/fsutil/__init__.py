"""The one filesystem layer under everything that writes or walks a tree: atomic writes
(`atomic`), the no-follow walker for trees a node can write (`nofollow`), and the `c 0 0`
whiteout and opaque mark overlayfs reads (`whiteout`).

A node's root user writes its own layer (`<state>/<node>/…`, exported rw with
`no_root_squash`), so every path below a node's directory is opened from a directory
descriptor with `O_NOFOLLOW`, checked with `fstat`, read with a size bound and walked with a
depth bound. Errors: `UnsafePath` (a `ConfigError` naming the file).
"""

from oneroot.fsutil.atomic import (
    atomic_file,
    fsync_path,
    replace_entry,
    write_atomic,
    write_if_changed,
)
from oneroot.fsutil.nofollow import (
    DIR_FLAGS,
    FILE_FLAGS,
    MAX_DEPTH,
    MAX_READ,
    DirAttrs,
    UnsafePath,
    check_name,
    check_relative,
    empty_dir,
    ensure_fresh_dir,
    lstat_at,
    open_dir,
    open_dir_fd,
    read_bounded,
    remove_tree,
    walk,
)
from oneroot.fsutil.whiteout import (
    OPAQUE_XATTR,
    WHITEOUT_DEVICE,
    fd_opaque,
    is_opaque,
    is_whiteout,
    make_whiteout,
    make_whiteout_at,
    set_opaque,
)

__all__ = [
    "DIR_FLAGS",
    "FILE_FLAGS",
    "MAX_DEPTH",
    "MAX_READ",
    "OPAQUE_XATTR",
    "WHITEOUT_DEVICE",
    "DirAttrs",
    "UnsafePath",
    "atomic_file",
    "check_name",
    "check_relative",
    "empty_dir",
    "ensure_fresh_dir",
    "fd_opaque",
    "fsync_path",
    "is_opaque",
    "is_whiteout",
    "lstat_at",
    "make_whiteout",
    "make_whiteout_at",
    "open_dir",
    "open_dir_fd",
    "read_bounded",
    "remove_tree",
    "replace_entry",
    "set_opaque",
    "walk",
    "write_atomic",
    "write_if_changed",
]
