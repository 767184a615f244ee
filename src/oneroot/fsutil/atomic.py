"""Files that are never half-written: a temp name in the target directory, write, fsync,
rename over the target, fsync the directory. The one implementation; everything else calls it.

    with atomic_file(dir_fd, "exports") as f:   # f is the temp file; set owner/mode on it
        f.write(data)
    replace_entry(dir_fd, "motd", lambda tmp: os.symlink("x", tmp, dir_fd=dir_fd))
    write_atomic(path, data)                     # a directory of the server's own
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from oneroot.fsutil.nofollow import DIR_FLAGS, UnsafePath, check_name, read_bounded

_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def temp_name(name: str) -> str:
    return f".{name}.{secrets.token_hex(4)}.oneroot-tmp"


@contextlib.contextmanager
def _renamed_into_place(dir_fd: int, name: str) -> Iterator[str]:
    """A temp name in `dir_fd`: what the block makes under it replaces `name` (then the
    directory is fsynced); removed when the block raises."""
    check_name(name)
    tmp = temp_name(name)
    try:
        yield tmp
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    os.fsync(dir_fd)


@contextlib.contextmanager
def atomic_file(dir_fd: int, name: str, *, mode: int = 0o600) -> Iterator[BinaryIO]:
    """A new temp file in `dir_fd` that replaces `name` when the block ends without error
    (fsynced before and after the rename); removed when it raises."""
    with _renamed_into_place(dir_fd, name) as tmp:
        fd = os.open(tmp, _TMP_FLAGS, mode, dir_fd=dir_fd)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def replace_entry(dir_fd: int, name: str, make: Callable[[str], None]) -> None:
    """`make(tmp)` creates an entry (a link, a device) named `tmp` in `dir_fd`; it then
    replaces `name` atomically."""
    with _renamed_into_place(dir_fd, name) as tmp:
        make(tmp)


@contextlib.contextmanager
def _parent(path: Path) -> Iterator[int]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent, DIR_FLAGS & ~os.O_NOFOLLOW)  # the server's own directory
    try:
        yield fd
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace `path` (in a directory of the server's own: config, exports, identity store)
    with `data`, so a reader sees the old file or the new one, never a mix."""
    with _parent(path) as dfd, atomic_file(dfd, path.name) as f:
        f.write(data)
        os.fchmod(f.fileno(), mode)


def fsync_path(path: Path, *, directory: bool = False) -> None:
    """fsync a file (never through a link) or a `directory` by path: a file another program
    wrote, or the directory a rename or a new file went into, before it counts as on disk."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else os.O_NOFOLLOW))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_if_changed(path: Path, data: bytes, *, mode: int = 0o644) -> bool:
    """`write_atomic` unless `path` already holds exactly `data` with `mode`; True when it
    wrote."""
    with _parent(path) as dfd:
        with contextlib.suppress(OSError, UnsafePath):
            current = read_bounded(dfd, path.name, limit=len(data))
            if current.data == data and current.mode == mode:
                return False
        with atomic_file(dfd, path.name) as f:
            f.write(data)
            os.fchmod(f.fileno(), mode)
    return True
