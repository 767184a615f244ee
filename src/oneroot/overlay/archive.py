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
import secrets
import stat
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from oneroot.errors import ConfigError
from oneroot.overlay.layer import OPAQUE_XATTR

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


@dataclass(frozen=True, slots=True, kw_only=True)
class TreeSource:
    """`base/parts…` (walked without following links) stored under `arcname` in the tarball;
    a directory with everything below it, or one entry."""

    base: Path
    parts: tuple[str, ...] = ()
    arcname: str


def walk(dir_fd: int, prefix: tuple[str, ...] = (), *, topdown: bool = True,
         same_dev: int | None = None) -> Iterator[tuple[tuple[str, ...], os.stat_result, int]]:
    """(parts, lstat, descriptor of the parent) of each entry below `dir_fd`, sorted by name.

    Top-down yields a directory before its contents, bottom-up after. With `same_dev`, a
    directory on another filesystem (a mount point) is refused, never walked into.
    """
    for name in sorted(os.listdir(dir_fd)):
        try:
            st = os.lstat(name, dir_fd=dir_fd)
        except FileNotFoundError:
            continue  # removed while we walked (a running node)
        parts = (*prefix, name)
        if topdown:
            yield parts, st, dir_fd
        if stat.S_ISDIR(st.st_mode):
            if same_dev is not None and st.st_dev != same_dev:
                raise ConfigError(f"{'/'.join(parts)} is a mount point",
                                  hint="unmount it first")
            sub = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
            try:
                yield from walk(sub, parts, topdown=topdown, same_dev=same_dev)
            finally:
                os.close(sub)
        if not topdown:
            yield parts, st, dir_fd


@contextlib.contextmanager
def open_tree(base: Path, parts: tuple[str, ...]) -> Iterator[int]:
    """A descriptor of the directory `base/parts…`, opened without following links."""
    fd = os.open(base, DIR_FLAGS)
    try:
        for name in parts:
            try:
                nfd = os.open(name, DIR_FLAGS, dir_fd=fd)
            except (NotADirectoryError, OSError) as exc:
                raise ConfigError(f"{base}/{'/'.join(parts)}: {name} is not a plain directory "
                                  f"({exc.strerror})",
                                  hint="inspect it; oneroot does not walk through links") \
                    from None
            os.close(fd)
            fd = nfd
        yield fd
    finally:
        os.close(fd)


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
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
                adder = _Adder(tar)
                for src in sources:
                    _add_source(adder, src)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dfd = os.open(dest.parent, DIR_FLAGS)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return dest


def _add_source(adder: _Adder, src: TreeSource) -> None:
    if not src.parts:
        raise ValueError("a TreeSource names at least one component below its base")
    with open_tree(src.base, src.parts[:-1]) as pfd:
        st = os.lstat(src.parts[-1], dir_fd=pfd)
        adder.entry(pfd, src.parts[-1], st, src.arcname)
        if stat.S_ISDIR(st.st_mode):
            sub = os.open(src.parts[-1], DIR_FLAGS, dir_fd=pfd)
            try:
                for parts, est, spfd in walk(sub, same_dev=st.st_dev):
                    adder.entry(spfd, parts[-1], est, "/".join((src.arcname, *parts)))
            finally:
                os.close(sub)


def remove_tree(base: Path, parts: tuple[str, ...]) -> None:
    """Remove `base/parts…` and everything below it, never following a link.

    Refuses (before removing anything) when a mount point is inside.
    """
    with open_tree(base, parts[:-1]) as pfd:
        st = os.lstat(parts[-1], dir_fd=pfd)
        if stat.S_ISDIR(st.st_mode):
            sub = os.open(parts[-1], DIR_FLAGS, dir_fd=pfd)
            try:
                for _ in walk(sub, same_dev=st.st_dev):
                    pass  # refuse mount points before the first unlink
                empty_dir(sub)
            finally:
                os.close(sub)
            os.rmdir(parts[-1], dir_fd=pfd)
        else:
            os.unlink(parts[-1], dir_fd=pfd)
        os.fsync(pfd)


def empty_dir(dir_fd: int, keep: frozenset[tuple[str, ...]] = frozenset()) -> list[
        tuple[str, ...]]:
    """Remove everything below `dir_fd` except the regular files in `keep` and their parent
    directories (a link or device standing where a kept file belongs is removed).

    Kept parents lose an opaque mark (it would hide every file below them). Returns what was
    removed, deepest first.
    """
    ancestors = {k[:i] for k in keep for i in range(1, len(k))}
    removed: list[tuple[str, ...]] = []
    for parts, st, pfd in walk(dir_fd, topdown=False):
        name = parts[-1]
        if parts in keep and stat.S_ISREG(st.st_mode):
            continue
        if parts in ancestors and stat.S_ISDIR(st.st_mode):
            with contextlib.suppress(OSError):
                os.removexattr(f"/proc/self/fd/{pfd}/{name}", OPAQUE_XATTR,
                               follow_symlinks=False)
            continue
        if stat.S_ISDIR(st.st_mode):
            os.rmdir(name, dir_fd=pfd)
        else:
            os.unlink(name, dir_fd=pfd)
        removed.append(parts)
    os.fsync(dir_fd)
    return removed
