"""A reproducible newc ("070701") cpio writer for initramfs images, in pure Python.

Owns the archive format only: entries in, bytes out. Identical inputs give identical bytes:
entries are sorted by path, every mtime is the one `mtime` given to the writer (0, or the
caller's SOURCE_DATE_EPOCH), uid/gid are 0, inode numbers are assigned in output order and no
entry is a hard link. Device nodes (`/dev/console`) are written into the archive, so building
needs no `mknod` and no root.

    archive = CpioArchive()
    archive.add_file("init", script.encode(), mode=0o755)
    archive.add_char_device("dev/console", 5, 1)
    archive.write(Path("initrd.img"), compression=Compression.GZIP)
"""

from __future__ import annotations

import enum
import gzip
import io
import os
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

from oneroot.errors import BuildError, ExternalToolError

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
_HEADER_LEN = 110  # 6 bytes of magic + 13 fields of 8 hex digits
_COPY_CHUNK = 1 << 20


class Sink(Protocol):
    """Where archive bytes go: a file, a gzip stream, a pipe."""

    def write(self, data: bytes, /) -> int: ...


class Compression(enum.Enum):
    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


class EntryKind(enum.IntEnum):
    """The file type bits of `st_mode` for the kinds an initramfs needs."""

    FILE = stat.S_IFREG
    DIR = stat.S_IFDIR
    SYMLINK = stat.S_IFLNK
    CHAR_DEVICE = stat.S_IFCHR
    BLOCK_DEVICE = stat.S_IFBLK


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One archive member. A file's bytes are `data`, or read from `source` when written."""

    path: str
    kind: EntryKind
    permissions: int
    data: bytes = b""
    source: Path | None = None
    major: int = 0
    minor: int = 0

    @property
    def mode(self) -> int:
        return int(self.kind) | self.permissions

    def size(self) -> int:
        if self.source is not None:
            return self.source.stat().st_size
        return len(self.data)


def normalize_path(path: str | PurePosixPath) -> str:
    """Archive names are relative (`dev/console`), normalized, and never leave the root."""
    text = str(path)
    parts = [p for p in PurePosixPath("/", text).parts[1:] if p != "."]
    if not parts:
        raise BuildError(f"cpio entry {text!r} names the archive root")
    if ".." in parts:
        raise BuildError(f"cpio entry {text!r} leaves the archive root",
                         hint="give paths relative to the initramfs root, without '..'")
    if any("\0" in p for p in parts):
        raise BuildError(f"cpio entry {text!r} contains a NUL byte")
    return "/".join(parts)


class CpioArchive:
    """An initramfs being assembled; parent directories are added as needed (mode 0755)."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and normalize_path(path) in self._entries

    def entries(self) -> list[Entry]:
        """Every entry in archive order (sorted by path, so parents precede children)."""
        return [self._entries[p] for p in sorted(self._entries)]

    def add_dir(self, path: str, *, mode: int = 0o755) -> None:
        self._add(Entry(path=normalize_path(path), kind=EntryKind.DIR, permissions=mode))

    def add_file(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        self._add(Entry(path=normalize_path(path), kind=EntryKind.FILE, permissions=mode,
                        data=data))

    def add_file_from(self, path: str, source: Path, *, mode: int | None = None) -> None:
        """Add a host file, read when the archive is written; mode defaults to the source's."""
        try:
            st = source.stat()
        except OSError as exc:
            raise BuildError(f"cannot add {source} to the initramfs: {exc.strerror}") from exc
        if not stat.S_ISREG(st.st_mode):
            raise BuildError(f"{source} is not a regular file")
        perms = stat.S_IMODE(st.st_mode) if mode is None else mode
        self._add(Entry(path=normalize_path(path), kind=EntryKind.FILE, permissions=perms,
                        source=source))

    def add_symlink(self, path: str, target: str) -> None:
        self._add(Entry(path=normalize_path(path), kind=EntryKind.SYMLINK, permissions=0o777,
                        data=target.encode()))

    def add_char_device(self, path: str, major: int, minor: int, *, mode: int = 0o600) -> None:
        self._add(Entry(path=normalize_path(path), kind=EntryKind.CHAR_DEVICE, permissions=mode,
                        major=major, minor=minor))

    def add_block_device(self, path: str, major: int, minor: int, *, mode: int = 0o600) -> None:
        self._add(Entry(path=normalize_path(path), kind=EntryKind.BLOCK_DEVICE, permissions=mode,
                        major=major, minor=minor))

    def add_tree(self, source: Path, prefix: str = "") -> None:
        """Add a host directory tree under `prefix`: files, dirs and symlinks, modes kept.

        Hard links become independent copies; sockets and FIFOs are refused.
        """
        for dirpath, dirnames, filenames in os.walk(source):
            dirnames.sort()
            here = Path(dirpath)
            rel = here.relative_to(source)
            for name in [*dirnames, *sorted(filenames)]:
                host = here / name
                dest = "/".join(p for p in (prefix, str(rel), name) if p not in ("", "."))
                st = host.lstat()
                if stat.S_ISLNK(st.st_mode):
                    self.add_symlink(dest, os.readlink(host))
                elif stat.S_ISDIR(st.st_mode):
                    self.add_dir(dest, mode=stat.S_IMODE(st.st_mode))
                elif stat.S_ISREG(st.st_mode):
                    self.add_file_from(dest, host, mode=stat.S_IMODE(st.st_mode))
                else:
                    raise BuildError(f"{host}: cannot archive a socket, FIFO or device node",
                                     hint="add device nodes with add_char_device()")

    def _add(self, entry: Entry) -> None:
        existing = self._entries.get(entry.path)
        if existing is not None:
            if existing == entry and entry.kind is EntryKind.DIR:
                return
            raise BuildError(f"initramfs path {entry.path!r} added twice",
                             hint="each path may be added once (directories excepted)")
        parent = PurePosixPath(entry.path).parent
        if str(parent) != ".":
            above = self._entries.get(str(parent))
            if above is None:
                self.add_dir(str(parent))
            elif above.kind is not EntryKind.DIR:
                raise BuildError(f"{entry.path!r}: its parent {str(parent)!r} is not a directory")
        self._entries[entry.path] = entry

    def write_to(self, out: Sink, *, mtime: int = 0) -> int:
        """Write the uncompressed archive to `out`; returns the bytes written."""
        written = 0
        for ino, entry in enumerate(self.entries(), start=1):
            written += _write_entry(out, entry, ino=ino, mtime=mtime)
        written += _write_header(out, name=TRAILER, ino=0, mode=0, nlink=1, mtime=0, size=0,
                                 rdev=(0, 0))
        return written

    def to_bytes(self, *, mtime: int = 0) -> bytes:
        buf = io.BytesIO()
        self.write_to(buf, mtime=mtime)
        return buf.getvalue()

    def write(self, out: Path, *, compression: Compression = Compression.GZIP,
              level: int | None = None, mtime: int = 0) -> int:
        """Write the (compressed) archive to `out` atomically; returns its size in bytes."""
        tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
        try:
            with tmp.open("wb") as fh:
                compress(self, fh, compression=compression, level=level, mtime=mtime)
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(out)
        finally:
            tmp.unlink(missing_ok=True)
        return out.stat().st_size


def compress(archive: CpioArchive, out: BinaryIO, *, compression: Compression,
             level: int | None = None, mtime: int = 0) -> None:
    """Write `archive` to `out` compressed; the output depends only on the archive's content."""
    if compression is Compression.NONE:
        archive.write_to(out, mtime=mtime)
    elif compression is Compression.GZIP:
        # filename="" and mtime=0 keep the gzip header free of the host's name and clock.
        with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0,
                           compresslevel=9 if level is None else level) as gz:
            archive.write_to(gz, mtime=mtime)
    elif compression is Compression.ZSTD:
        _zstd(archive, out, level=19 if level is None else level, mtime=mtime)
    else:  # pragma: no cover - the enum is closed
        raise AssertionError(compression)


def _zstd(archive: CpioArchive, out: BinaryIO, *, level: int, mtime: int) -> None:
    # --single-thread: multi-threaded zstd frames differ from single-threaded ones, so one
    # mode everywhere keeps the output reproducible across machines with different core counts.
    cmd = ["zstd", "-q", "-c", f"-{level}", "--single-thread"]
    if level > 19:
        cmd.insert(1, "--ultra")
    try:
        fd = out.fileno()
    except (AttributeError, io.UnsupportedOperation):
        fd = None
    if fd is None:  # an in-memory stream: compress in one go
        result = _run_zstd(cmd, archive.to_bytes(mtime=mtime))
        out.write(result)
        return
    out.flush()
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=fd, stderr=subprocess.PIPE)
    except FileNotFoundError as exc:
        raise ExternalToolError("zstd is not installed", hint="apt-get install zstd") from exc
    assert proc.stdin is not None
    try:
        archive.write_to(proc.stdin, mtime=mtime)
    finally:
        proc.stdin.close()
    stderr = proc.stderr.read() if proc.stderr else b""
    if proc.wait() != 0:
        raise ExternalToolError(f"zstd failed: {stderr.decode(errors='replace').strip()}")


def _run_zstd(cmd: list[str], data: bytes) -> bytes:
    try:
        result = subprocess.run(cmd, input=data, capture_output=True, check=False)
    except FileNotFoundError as exc:
        raise ExternalToolError("zstd is not installed", hint="apt-get install zstd") from exc
    if result.returncode != 0:
        raise ExternalToolError(f"zstd failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def _write_entry(out: Sink, entry: Entry, *, ino: int, mtime: int) -> int:
    nlink = 2 if entry.kind is EntryKind.DIR else 1
    size = entry.size() if entry.kind in (EntryKind.FILE, EntryKind.SYMLINK) else 0
    n = _write_header(out, name=entry.path, ino=ino, mode=entry.mode, nlink=nlink, mtime=mtime,
                      size=size, rdev=(entry.major, entry.minor))
    if entry.source is not None:
        copied = 0
        with entry.source.open("rb") as src:
            for chunk in _chunks(src):
                out.write(chunk)
                copied += len(chunk)
        if copied != size:
            raise BuildError(f"{entry.source} changed size while the initramfs was written")
    else:
        out.write(entry.data)
    pad = _padding(size)
    out.write(pad)
    return n + size + len(pad)


def _chunks(src: BinaryIO) -> Iterator[bytes]:
    while chunk := src.read(_COPY_CHUNK):
        yield chunk


def _write_header(out: Sink, *, name: str, ino: int, mode: int, nlink: int, mtime: int,
                  size: int, rdev: tuple[int, int]) -> int:
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdev[0], rdev[1], len(encoded), 0)
    if any(f < 0 or f > 0xFFFFFFFF for f in fields):
        raise BuildError(f"cpio entry {name!r}: a header field does not fit in 32 bits",
                         hint="newc cannot hold files of 4 GiB or more")
    header = MAGIC + b"".join(b"%08X" % f for f in fields) + encoded
    header += _padding(len(header))
    out.write(header)
    return len(header)


def _padding(length: int) -> bytes:
    return b"\0" * (-length % 4)
