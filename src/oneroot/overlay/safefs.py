"""Writing into a layer the node itself can write: never follow a link the node planted.

A node's `upper/` is exported read-write to that node with `no_root_squash`, so root on the node
can replace `upper/etc` with a symlink to the server's `/etc`. Every path inside a layer is
therefore walked one component at a time from a directory file descriptor with `O_NOFOLLOW`,
and files are written to a temp name in the final directory, fsynced and renamed there.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from oneroot.errors import ConfigError
from oneroot.overlay.layer import WHITEOUT_DEVICE, is_whiteout

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True, kw_only=True)
class DirAttrs:
    mode: int = 0o755
    uid: int = 0
    gid: int = 0


def check_relative(rel: PurePosixPath) -> tuple[str, ...]:
    """The components of a path inside a layer; absolute paths and `..` are refused."""
    parts = tuple(p for p in rel.parts if p not in ("", "."))
    if rel.is_absolute() or not parts or ".." in parts:
        raise ConfigError(f"{rel} is not a plain path inside a layer")
    return parts


@contextlib.contextmanager
def open_dir(base: Path, rel_dir: tuple[str, ...], *, create: bool,
             attrs_for: dict[tuple[str, ...], DirAttrs] | None = None) -> Iterator[int]:
    """A descriptor of `base/rel_dir`, walked without following links.

    With `create`, missing directories are made (attributes from `attrs_for`, else 0755 root),
    and a whiteout standing where a directory is needed is replaced by the directory.
    """
    fd = os.open(base, _DIR_FLAGS)
    try:
        for i, name in enumerate(rel_dir):
            try:
                st = os.lstat(name, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                st = None
            if st is not None and is_whiteout(st) and create:
                os.unlink(name, dir_fd=fd)
                st = None
            if st is None:
                attrs = (attrs_for or {}).get(rel_dir[: i + 1], DirAttrs())
                os.mkdir(name, attrs.mode, dir_fd=fd)
                if os.geteuid() == 0:
                    os.chown(name, attrs.uid, attrs.gid, dir_fd=fd, follow_symlinks=False)
                os.chmod(name, attrs.mode, dir_fd=fd)
            elif not stat.S_ISDIR(st.st_mode):
                where = "/".join(rel_dir[: i + 1])
                raise ConfigError(
                    f"{base}/{where} is not a directory (a link or file put there by the node?)",
                    hint="inspect the layer; oneroot does not write through links")
            nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
        yield fd
    finally:
        os.close(fd)


def read_file(base: Path, rel: PurePosixPath) -> tuple[bytes, int] | None:
    """(content, mode) of a regular file inside a layer, or None when absent or not regular."""
    parts = check_relative(rel)
    try:
        with open_dir(base, parts[:-1], create=False) as dfd:
            st = os.lstat(parts[-1], dir_fd=dfd)
            if not stat.S_ISREG(st.st_mode):
                return None
            ffd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            with os.fdopen(ffd, "rb") as f:
                return f.read(), stat.S_IMODE(st.st_mode)
    except (FileNotFoundError, NotADirectoryError, ConfigError):
        return None


def write_file(base: Path, rel: PurePosixPath, data: bytes, *, mode: int = 0o644,
               attrs_for: dict[tuple[str, ...], DirAttrs] | None = None) -> bool:
    """Atomically make `base/rel` a root-owned regular file with `data` and `mode`.

    Returns False (and writes nothing) when the file already is exactly that.
    """
    parts = check_relative(rel)
    current = read_file(base, rel)
    if current == (data, mode):
        return False
    with open_dir(base, parts[:-1], create=True, attrs_for=attrs_for) as dfd:
        tmp = f".{parts[-1]}.{secrets.token_hex(4)}.tmp"
        ffd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600, dir_fd=dfd)
        try:
            with os.fdopen(ffd, "wb") as f:
                f.write(data)
                f.flush()
                if os.geteuid() == 0:
                    os.fchown(f.fileno(), 0, 0)
                os.fchmod(f.fileno(), mode)
                os.fsync(f.fileno())
            os.replace(tmp, parts[-1], src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dfd)
            raise
        os.fsync(dfd)
    return True


def write_whiteout(base: Path, rel: PurePosixPath,
                   attrs_for: dict[tuple[str, ...], DirAttrs] | None = None) -> bool:
    """Make `base/rel` a `c 0 0` whiteout (replacing a file there); False if it already is."""
    parts = check_relative(rel)
    with open_dir(base, parts[:-1], create=True, attrs_for=attrs_for) as dfd:
        try:
            st = os.lstat(parts[-1], dir_fd=dfd)
        except FileNotFoundError:
            st = None
        if st is not None and is_whiteout(st):
            return False
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"{base}/{rel} is a directory; empty it before masking it")
        tmp = f".{parts[-1]}.{secrets.token_hex(4)}.wh"
        os.mknod(tmp, 0o600 | stat.S_IFCHR, WHITEOUT_DEVICE, dir_fd=dfd)
        os.replace(tmp, parts[-1], src_dir_fd=dfd, dst_dir_fd=dfd)
        os.fsync(dfd)
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


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> bool:
    """`write_file` for a trusted directory of the server's own (config, identity store).

    Same guarantees as `oneroot.ops.files.write_atomic`, usable below the `ops` layer.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_file(path.parent, PurePosixPath(path.name), data, mode=mode)
