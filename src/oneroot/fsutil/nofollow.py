"""Walking a tree a node can write, without ever following its links.

Every directory is opened from its parent's descriptor with `O_NOFOLLOW | O_DIRECTORY`; files
are opened `O_NOFOLLOW | O_NONBLOCK` (a FIFO never blocks us) and checked with `fstat` before
a byte is read; reads stop at a size bound and walks at a depth bound (which also bounds the
descriptors held open: one per level). Directories this module creates are made private
(0700), opened without following links, and only then given their owner and mode through the
descriptor, so a link swapped in after the `mkdir` is never chmod-ed or chown-ed.

Strictest of the rules the three former walkers had: a link, file or device where a directory
is needed is refused (`UnsafePath`) and never replaced, but for a `c 0 0` whiteout when the
caller asks (`replace_whiteouts`: a generated file needs the directory a node deleted).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from oneroot.errors import ConfigError

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
MAX_DEPTH = 256  # directory levels below a walk's start (and descriptors it holds open)
MAX_READ = 1 << 20  # bytes read whole from a node's tree unless the caller says otherwise

_WHITEOUT_DEVICE = os.makedev(0, 0)
_OPAQUE_XATTR = "trusted.overlay.opaque"


class UnsafePath(ConfigError):
    """A path in a node-writable tree is not what it must be: a link, FIFO, device, a file
    too large to read, or a tree too deep to walk."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DirAttrs:
    mode: int = 0o755
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class FileData:
    data: bytes
    st: os.stat_result

    @property
    def mode(self) -> int:
        return stat.S_IMODE(self.st.st_mode)


def check_name(name: str) -> str:
    """One path component: not empty, `.`, `..`, and without `/` or NUL."""
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise UnsafePath(f"{name!r} is not a plain file name")
    return name


def check_relative(rel: PurePosixPath) -> tuple[str, ...]:
    """The components of a path inside a tree; absolute paths and `..` are refused."""
    parts = tuple(p for p in rel.parts if p not in ("", "."))
    if rel.is_absolute() or not parts or ".." in parts:
        raise UnsafePath(f"{rel} is not a plain path inside a layer")
    return parts


def kind(st: os.stat_result) -> str:
    m = st.st_mode
    if stat.S_ISCHR(m) and st.st_rdev == _WHITEOUT_DEVICE:
        return "whiteout"
    for test, word in ((stat.S_ISREG, "file"), (stat.S_ISDIR, "directory"),
                       (stat.S_ISLNK, "symbolic link"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(m):
            return word
    return "socket"


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return None


def _lstat_path(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


def _not_a_dir(where: str, st: os.stat_result | None) -> UnsafePath:
    what = kind(st) if st is not None else "not a directory"
    return UnsafePath(f"{where} is a {what}, not a directory (put there by the node?)",
                      hint="inspect the layer; oneroot never walks or writes through links")


def _set_attrs(fd: int, attrs: DirAttrs) -> None:
    # Through the descriptor: a link swapped in after the mkdir is never followed.
    if os.geteuid() == 0:
        os.fchown(fd, attrs.uid, attrs.gid)
    os.fchmod(fd, attrs.mode)


def _step(fd: int, name: str, where: str, *, attrs: DirAttrs | None,
          replace_whiteouts: bool) -> int:
    """Open the directory `name` in `fd`; with `attrs`, make it when missing."""
    check_name(name)
    try:
        return os.open(name, DIR_FLAGS, dir_fd=fd)
    except FileNotFoundError:
        if attrs is None:
            raise
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        st = lstat_at(fd, name)
        if not (attrs is not None and replace_whiteouts and st is not None
                and kind(st) == "whiteout"):
            raise _not_a_dir(where, st) from None
        os.unlink(name, dir_fd=fd)
    os.mkdir(name, 0o700, dir_fd=fd)
    try:
        nfd = os.open(name, DIR_FLAGS, dir_fd=fd)
    except OSError:
        raise _not_a_dir(where, lstat_at(fd, name)) from None
    _set_attrs(nfd, attrs)
    return nfd


def open_dir_fd(dir_fd: int, parts: tuple[str, ...], *, create: bool = False,
                attrs_for: Mapping[tuple[str, ...], DirAttrs] | None = None,
                replace_whiteouts: bool = False, shown: str = "") -> int:
    """A new descriptor of `dir_fd/parts…`, walked without following links (the caller
    closes it). With `create`, missing directories are made (attributes from `attrs_for`,
    else root 0755)."""
    fd = os.dup(dir_fd)
    try:
        for i, name in enumerate(parts):
            where = "/".join((shown, *parts[: i + 1])) if shown else "/".join(parts[: i + 1])
            attrs = (attrs_for or {}).get(parts[: i + 1], DirAttrs()) if create else None
            nfd = _step(fd, name, where, attrs=attrs, replace_whiteouts=replace_whiteouts)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def open_dir(base: Path, parts: tuple[str, ...] = (), *, create: bool = False,
             attrs_for: Mapping[tuple[str, ...], DirAttrs] | None = None,
             replace_whiteouts: bool = False) -> Iterator[int]:
    """A descriptor of `base/parts…`: `base` is the server's (its last component is not
    followed either), everything below it is walked with `open_dir_fd`."""
    try:
        top = os.open(base, DIR_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _not_a_dir(str(base), _lstat_path(base)) from None
        raise
    try:
        fd = open_dir_fd(top, parts, create=create, attrs_for=attrs_for,
                         replace_whiteouts=replace_whiteouts, shown=str(base))
    finally:
        os.close(top)
    try:
        yield fd
    finally:
        os.close(fd)


def read_bounded(dir_fd: int, name: str, *, limit: int = MAX_READ, head: bool = False,
                 shown: str | None = None) -> FileData:
    """A regular file's bytes (at most `limit`), never blocking and never through a link.

    A FIFO, device, socket or link, or a file larger than `limit` (unless `head`: then its
    first `limit` bytes are the answer), is refused with an error naming it, before anything
    is read.
    """
    where = shown or name
    check_name(name)
    st = os.lstat(name, dir_fd=dir_fd)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePath(f"{where} is a {kind(st)}, not a regular file: not read")
    fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
    try:
        fst = os.fstat(fd)
        if not stat.S_ISREG(fst.st_mode) or (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
            raise UnsafePath(f"{where} changed while it was opened: not read")
        if fst.st_size > limit and not head:
            raise UnsafePath(f"{where} is {fst.st_size} bytes, over the {limit}-byte limit: "
                             "not read", hint="a node may have planted it; inspect the file")
        chunks, left = [], limit + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 16))):
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if head:
            data = data[:limit]
        elif len(data) > limit:
            raise UnsafePath(f"{where} grew past the {limit}-byte limit: not read")
        return FileData(data=data, st=fst)
    finally:
        os.close(fd)


def walk(dir_fd: int, prefix: tuple[str, ...] = (), *, topdown: bool = True,
         same_dev: int | None = None, max_depth: int = MAX_DEPTH,
         ) -> Iterator[tuple[tuple[str, ...], os.stat_result, int]]:
    """(parts, lstat, descriptor of the parent) of each entry below `dir_fd`, sorted by name.

    Top-down yields a directory before its contents, bottom-up after. With `same_dev`, a
    directory on another filesystem (a mount point) is refused, never walked into. Deeper
    than `max_depth` levels is refused (`UnsafePath`).
    """
    if len(prefix) >= max_depth:
        raise UnsafePath(f"{'/'.join(prefix)} is more than {max_depth} directories deep: "
                         "not walked", hint="a node may have planted it; inspect the layer")
    for name in sorted(os.listdir(dir_fd)):
        st = lstat_at(dir_fd, name)
        if st is None:
            continue  # removed while we walked (a running node)
        parts = (*prefix, name)
        if topdown:
            yield parts, st, dir_fd
        if stat.S_ISDIR(st.st_mode):
            if same_dev is not None and st.st_dev != same_dev:
                raise UnsafePath(f"{'/'.join(parts)} is a mount point", hint="unmount it first")
            sub = _step(dir_fd, name, "/".join(parts), attrs=None, replace_whiteouts=False)
            try:
                yield from walk(sub, parts, topdown=topdown, same_dev=same_dev,
                                max_depth=max_depth)
            finally:
                os.close(sub)
        if not topdown:
            yield parts, st, dir_fd


def _drop_opaque(pfd: int, name: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(name, DIR_FLAGS, dir_fd=pfd)
        try:
            os.removexattr(fd, _OPAQUE_XATTR)
        finally:
            os.close(fd)


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
            _drop_opaque(pfd, name)
            continue
        if stat.S_ISDIR(st.st_mode):
            os.rmdir(name, dir_fd=pfd)
        else:
            os.unlink(name, dir_fd=pfd)
        removed.append(parts)
    os.fsync(dir_fd)
    return removed


def remove_at(pfd: int, name: str) -> None:
    """Remove `name` in `pfd` and everything below it, never following a link; refuses
    (before removing anything) when a mount point is inside."""
    st = os.lstat(name, dir_fd=pfd)
    if stat.S_ISDIR(st.st_mode):
        sub = _step(pfd, name, name, attrs=None, replace_whiteouts=False)
        try:
            for _ in walk(sub, same_dev=st.st_dev):
                pass  # refuse mount points before the first unlink
            empty_dir(sub)
        finally:
            os.close(sub)
        os.rmdir(name, dir_fd=pfd)
    else:
        os.unlink(name, dir_fd=pfd)
    os.fsync(pfd)


def remove_tree(base: Path, parts: tuple[str, ...]) -> None:
    """Remove `base/parts…` and everything below it (see `remove_at`)."""
    with open_dir(base, parts[:-1]) as pfd:
        remove_at(pfd, parts[-1])


def ensure_fresh_dir(dir_fd: int, name: str, attrs: DirAttrs, *, shown: str = "") -> int:
    """A descriptor of the directory `name` in `dir_fd`, an entry oneroot owns: made when
    missing, recreated when something else stands there (a link, file or device a node
    planted: removed without following it), owner and mode set through the descriptor."""
    where = shown or name
    for _ in range(3):
        st = lstat_at(dir_fd, name)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=dir_fd)
            st = None
        if st is None:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o700, dir_fd=dir_fd)
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                continue  # swapped meanwhile: again
            raise
        fst = os.fstat(fd)
        if (stat.S_IMODE(fst.st_mode), fst.st_uid, fst.st_gid) != (
                attrs.mode, attrs.uid, attrs.gid):
            _set_attrs(fd, attrs)
        return fd
    raise UnsafePath(f"{where} keeps changing under oneroot: not used",
                     hint="something (the node?) replaces it; stop it and retry")
