"""Layer trees walked without following links: archived to a tarball, emptied in place.

A node's layer is written by root on that node, so nothing here follows a symbolic link: every
directory is opened with `O_NOFOLLOW` from its parent's descriptor. Tarballs are PAX, keep
numeric owners, modes, mtimes, hard links, symbolic links as links, `c 0 0` whiteouts and other
devices as devices, and extended attributes (`trusted.overlay.opaque`) as `SCHILY.xattr.*`
records, which `tar --xattrs --xattrs-include='*' -xpzf` restores.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from oneroot.errors import ConfigError
from oneroot.fsutil import DIR_FLAGS, FILE_FLAGS, UnsafePath, atomic_file, open_dir, walk

# A file whose size is over this and mostly holes (a node's `truncate -s 1T`) is refused
# rather than streamed into the tarball as that many zero bytes.
SPARSE_ARCHIVE_LIMIT = 1 << 30


def _check_not_sparse_giant(st: os.stat_result, arcname: str) -> None:
    if st.st_size > SPARSE_ARCHIVE_LIMIT and st.st_blocks * 512 < st.st_size // 2:
        raise UnsafePath(f"{arcname} is a sparse file of {st.st_size} bytes "
                         f"({st.st_blocks * 512} on disk): not archived",
                         hint="a node may have planted it: look at it, remove it "
                              "(`oneroot overlay rm`), then retry")


@dataclass(frozen=True, slots=True, kw_only=True)
class TreeSource:
    """`base/parts…` (walked without following links) stored under `arcname` in the tarball;
    a directory with everything below it, or one entry."""

    base: Path
    parts: tuple[str, ...] = ()
    arcname: str


def _xattr_headers(fd: int) -> dict[str, str]:
    headers: dict[str, str] = {}
    try:
        names = os.listxattr(fd)
    except OSError:
        return headers
    for name in names:
        with contextlib.suppress(OSError):
            value = os.getxattr(fd, name)
            headers[f"SCHILY.xattr.{name}"] = value.decode("utf-8", "surrogateescape")
    return headers


class _Adder:
    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar
        self.links: dict[tuple[int, int], str] = {}

    def entry(self, parent_fd: int, name: str, st: os.stat_result, arcname: str) -> None:
        info = tarfile.TarInfo(arcname)
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.uname = info.gname = ""
        info.mtime = int(st.st_mtime)
        mode = st.st_mode
        if stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in self.links:
                info.type, info.linkname = tarfile.LNKTYPE, self.links[key]
                self.tar.addfile(info)
                return
            _check_not_sparse_giant(st, arcname)
            fd = os.open(name, FILE_FLAGS, dir_fd=parent_fd)
            with os.fdopen(fd, "rb") as f:
                fst = os.fstat(f.fileno())
                if (fst.st_dev, fst.st_ino) != key:
                    raise ConfigError(f"{arcname} changed while it was archived",
                                      hint="try again (is the node writing to it?)")
                info.size = fst.st_size
                info.pax_headers = _xattr_headers(f.fileno())
                self.tar.addfile(info, cast(BinaryIO, f))
            if st.st_nlink > 1:
                self.links[key] = arcname
            return
        if stat.S_ISDIR(mode):
            info.type = tarfile.DIRTYPE
            fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
            try:
                info.pax_headers = _xattr_headers(fd)
            finally:
                os.close(fd)
        elif stat.S_ISLNK(mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=parent_fd)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif stat.S_ISFIFO(mode):
            info.type = tarfile.FIFOTYPE
        else:
            return  # a socket: tar cannot hold one, and a socket holds no data
        self.tar.addfile(info)


def write_tar(dest: Path, sources: Sequence[TreeSource]) -> Path:
    """Write `sources` into the gzip tarball `dest` atomically (temp name, fsync, rename)."""
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (open_dir(dest.parent) as dfd, atomic_file(dfd, dest.name) as raw,
          tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT) as tar):
        adder = _Adder(tar)
        for src in sources:
            _add_source(adder, src)
    return dest


def _add_source(adder: _Adder, src: TreeSource) -> None:
    if not src.parts:
        raise ValueError("a TreeSource names at least one component below its base")
    with open_dir(src.base, src.parts[:-1]) as pfd:
        st = os.lstat(src.parts[-1], dir_fd=pfd)
        adder.entry(pfd, src.parts[-1], st, src.arcname)
        if stat.S_ISDIR(st.st_mode):
            sub = os.open(src.parts[-1], DIR_FLAGS, dir_fd=pfd)
            try:
                for parts, est, spfd in walk(sub, same_dev=st.st_dev):
                    adder.entry(spfd, parts[-1], est, "/".join((src.arcname, *parts)))
            finally:
                os.close(sub)
