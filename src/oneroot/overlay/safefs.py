"""Generated files in a layer the node itself can write: never follow a link the node planted.

A node's `upper/` is exported read-write to that node with `no_root_squash`, so root on the node
can replace `upper/etc` with a symlink to the server's `/etc`, or `upper/etc/hostname` with a
FIFO or a sparse 1 TiB file. Paths are walked with `oneroot.fsutil` (directory descriptors,
`O_NOFOLLOW`); a generated file is compared with a bounded read (anything that is not a small
regular file is simply replaced, since oneroot owns it) and written to a temp name in its
directory, fsynced and renamed there.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path, PurePosixPath

from oneroot.errors import ConfigError
from oneroot.fsutil import (
    MAX_READ,
    DirAttrs,
    UnsafePath,
    atomic_file,
    check_relative,
    is_whiteout,
    lstat_at,
    make_whiteout_at,
    open_dir,
    read_bounded,
)

__all__ = ["DirAttrs", "check_relative", "image_dir_attrs", "read_file", "write_file",
           "write_whiteout"]


def read_file(base: Path, rel: PurePosixPath, *,
              limit: int = MAX_READ) -> tuple[bytes, int] | None:
    """(content, mode) of a regular file of at most `limit` bytes inside a layer; None when it
    is absent, not a regular file, too large, or behind a link."""
    parts = check_relative(rel)
    try:
        with open_dir(base, parts[:-1]) as dfd:
            got = read_bounded(dfd, parts[-1], limit=limit, shown=f"{base}/{rel}")
    except (FileNotFoundError, UnsafePath):
        return None
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            return None
        raise
    return got.data, got.mode


def _same(dfd: int, name: str, data: bytes, mode: int) -> bool:
    with contextlib.suppress(OSError, UnsafePath):
        got = read_bounded(dfd, name, limit=len(data))
        return got.data == data and got.mode == mode
    return False


def write_file(base: Path, rel: PurePosixPath, data: bytes, *, mode: int = 0o644,
               attrs_for: dict[tuple[str, ...], DirAttrs] | None = None) -> bool:
    """Atomically make `base/rel` a root-owned regular file with `data` and `mode`.

    Returns False (and writes nothing) when the file already is exactly that. Whatever else
    stands there (a link, FIFO, device, a giant file) is replaced, never read or followed.
    """
    parts = check_relative(rel)
    with open_dir(base, parts[:-1], create=True, attrs_for=attrs_for,
                  replace_whiteouts=True) as dfd:
        if _same(dfd, parts[-1], data, mode):
            return False
        st = lstat_at(dfd, parts[-1])
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"{base}/{rel} is a directory; oneroot writes a file there",
                              hint="remove the directory from the layer")
        with atomic_file(dfd, parts[-1]) as f:
            f.write(data)
            if os.geteuid() == 0:
                os.fchown(f.fileno(), 0, 0)
            os.fchmod(f.fileno(), mode)
    return True


def write_whiteout(base: Path, rel: PurePosixPath,
                   attrs_for: dict[tuple[str, ...], DirAttrs] | None = None) -> bool:
    """Make `base/rel` a `c 0 0` whiteout (replacing a file there); False if it already is."""
    parts = check_relative(rel)
    with open_dir(base, parts[:-1], create=True, attrs_for=attrs_for,
                  replace_whiteouts=True) as dfd:
        st = lstat_at(dfd, parts[-1])
        if st is not None and is_whiteout(st):
            return False
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"{base}/{rel} is a directory; empty it before masking it")
        make_whiteout_at(dfd, parts[-1])
    return True


def image_dir_attrs(image_root: Path | None, rel: PurePosixPath) -> dict[tuple[str, ...],
                                                                         DirAttrs]:
    """Owner and mode of each parent directory of `rel` as the image has them.

    A directory in an upper layer hides the attributes of the one below it, so a generated
    `upper/etc` must look like the image's `/etc`.
    """
    out: dict[tuple[str, ...], DirAttrs] = {}
    if image_root is None:
        return out
    parts = check_relative(rel)[:-1]
    for i in range(1, len(parts) + 1):
        try:
            st = os.lstat(image_root.joinpath(*parts[:i]))
        except OSError:
            break
        if stat.S_ISDIR(st.st_mode):
            out[parts[:i]] = DirAttrs(mode=stat.S_IMODE(st.st_mode), uid=st.st_uid,
                                      gid=st.st_gid)
    return out
