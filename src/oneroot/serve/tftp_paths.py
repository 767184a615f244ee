"""TFTP file names: how a request's name becomes a file under the TFTP root, or is refused.

File names (tested in tests/unit/serve/test_tftp_paths.py):
- ONE leading `/` is stripped and the rest is taken relative to the root, as tftpd-hpa does
  under `-s` (GRUB asks for `/boot/grub/...`, pxelinux for relative names): `/etc/passwd`
  means `<root>/etc/passwd`. A name that is still absolute after that (`//etc/passwd`) is refused.
- `\\` is read as `/` (Windows-style boot loaders ask for `boot\\x86\\wdsnbp.com`); this also puts
  `..\\..\\x` through the same `..` check.
- Refused with ERROR 2 (access violation): any `..` component, NUL bytes, names over 255 bytes,
  an empty name, anything whose real path (symlinks resolved) leaves the real root, device
  files, FIFOs and sockets. Missing files and directories are ERROR 1 (file not found).
- Empty and `.` components are dropped (`a//./b` is `a/b`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from oneroot.errors import ProtocolError
from oneroot.proto.tftp import ErrorCode, FileObjectSource

__all__ = ["MAX_NAME_BYTES", "PathRefused", "normalize_tftp_name", "open_tftp_file",
           "resolve_tftp_path"]

MAX_NAME_BYTES = 255
_FILE_BUFFER = 256 * 1024


class PathRefused(ProtocolError):
    """A requested name we will not serve; `code` is the TFTP error code to answer with."""

    def __init__(self, message: str, *, code: ErrorCode = ErrorCode.ACCESS_VIOLATION) -> None:
        super().__init__(message)
        self.code = code


def normalize_tftp_name(name: str) -> str:
    """The request's file name as a clean relative POSIX path, or `PathRefused` (see module doc)."""
    if "\0" in name:
        raise PathRefused("NUL byte in file name")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise PathRefused(f"file name longer than {MAX_NAME_BYTES} bytes")
    name = name.replace("\\", "/")
    if name.startswith("/"):
        name = name[1:]
    if name.startswith("/"):
        raise PathRefused("absolute file name")
    parts = name.split("/")
    if ".." in parts:
        raise PathRefused("'..' in file name")
    parts = [part for part in parts if part not in ("", ".")]
    if not parts:
        raise PathRefused("empty file name")
    return "/".join(parts)


def resolve_tftp_path(root: Path, name: str) -> Path:
    """The real path under `root` that `name` names; `PathRefused` if it is bad or leaves root.

    Symlinks are resolved (`os.path.realpath`) and the result must stay under the real root, so
    a link inside the root that points out of it is refused even though its name looks fine.
    The file need not exist: opening it reports that (`open_tftp_file`).
    """
    relative = normalize_tftp_name(name)
    real_root = os.path.realpath(root)
    candidate = os.path.realpath(os.path.join(real_root, relative))
    if not _is_under(candidate, real_root):
        raise PathRefused("file name resolves outside the TFTP root")
    return Path(candidate)


def _is_under(path: str, real_root: str) -> bool:
    return path == real_root or path.startswith(real_root.rstrip("/") + "/")


def open_tftp_file(root: Path, name: str) -> FileObjectSource:
    """Open a regular file under `root` for a read transfer, or raise `PathRefused`.

    The checked path is opened with O_NOFOLLOW (its last component cannot have become a link),
    and the opened descriptor's own path is checked again, which closes the window in which an
    intermediate directory could be swapped for a link between the check and the open.
    """
    path = resolve_tftp_path(root, name)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise PathRefused("file not found", code=ErrorCode.FILE_NOT_FOUND) from None
    except PermissionError:
        raise PathRefused("permission denied") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise PathRefused("not a file under the TFTP root") from None
        raise PathRefused(f"cannot open: {exc.strerror}", code=ErrorCode.NOT_DEFINED) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise PathRefused("is a directory", code=ErrorCode.FILE_NOT_FOUND)
        if not stat.S_ISREG(info.st_mode):
            raise PathRefused("not a regular file")
        with contextlib.suppress(OSError):  # no /proc: the realpath check above stands alone
            if not _is_under(os.readlink(f"/proc/self/fd/{fd}"), os.path.realpath(root)):
                raise PathRefused("file name resolves outside the TFTP root")
        os.set_blocking(fd, True)
        reader = open(fd, "rb", buffering=_FILE_BUFFER)  # noqa: SIM115 - the source owns it
    except BaseException:
        os.close(fd)
        raise
    return FileObjectSource(reader, info.st_size)
