"""Boot payloads replicated by content hash between servers on one database.

`BootIndex` knows the files of this server's boot directory and their SHA-256 (hashed again
only when a file's size, time or inode changes). A file changed in the last `SETTLE_SECONDS`,
or while it was hashed, is still being written (`cp` of a kernel into the boot directory): it
is left out until it is still, so no server publishes, or fetches over, a half-written file.

`fetch_payload` brings one wanted file from a server that has it: the name must be a plain
path inside the boot directory (walked without following links), the body is streamed into a
temp file there while it is hashed, cut at the size the database announced (and
`payload_bytes`), and renamed into place only if its SHA-256 is the one wanted. A peer, or a
database row, can thus add nothing but the bytes it announced.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from oneroot.errors import OnerootError
from oneroot.fsutil.atomic import atomic_file
from oneroot.fsutil.nofollow import UnsafePath, check_relative, open_dir, walk
from oneroot.inventory.payloads import Payload, Wanted

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
SETTLE_SECONDS = 1.0  # a file changed more recently than this is still being written
FETCH_TIMEOUT = 30.0  # seconds without progress before a peer is given up
_TEMP_SUFFIX = ".oneroot-tmp"
_HEX = frozenset("0123456789abcdef")


class PayloadRefused(OnerootError):
    """A wanted boot file could not be fetched safely (bad name, size or hash, no peer)."""


def is_sha256(text: str) -> bool:
    return len(text) == 64 and set(text) <= _HEX


@dataclass(frozen=True, slots=True)
class _Seen:
    size: int
    mtime_ns: int
    inode: int
    sha256: str


class BootIndex:
    """The regular files under `boot_dir` (links and temp files are not published)."""

    def __init__(self, boot_dir: Path, *, max_files: int) -> None:
        self.boot_dir = boot_dir
        self.max_files = max_files
        self._seen: dict[str, _Seen] = {}
        self.settling: frozenset[str] = frozenset()  # being written: neither published nor fetched
        self.by_hash: dict[str, str] = {}  # sha256 -> name

    def scan(self, *, now: float | None = None) -> list[Payload]:
        """The files to publish; those still being written go to `settling` instead."""
        now = time.time() if now is None else now
        found: dict[str, _Seen] = {}
        settling: set[str] = set()
        files: list[Payload] = []
        with open_dir(self.boot_dir) as top:
            for parts, st, parent in walk(top):
                if not stat.S_ISREG(st.st_mode) or parts[-1].endswith(_TEMP_SUFFIX):
                    continue
                if len(files) >= self.max_files:
                    log.warning("payload.index_full files=%d", self.max_files)
                    break
                name = "/".join(parts)
                seen = self._seen.get(name)
                if seen is None or (seen.size, seen.mtime_ns, seen.inode) != (
                        st.st_size, st.st_mtime_ns, st.st_ino):
                    # A write sets the time to now; one far off was set on purpose (cp -p).
                    recent = abs(st.st_mtime_ns / 1e9 - now) < SETTLE_SECONDS
                    seen = None if recent else _hash_if_still(parent, parts[-1], st)
                if seen is None:
                    settling.add(name)
                    continue
                found[name] = seen
                files.append(Payload(name=name, sha256=seen.sha256, size=seen.size,
                                     mtime=seen.mtime_ns / 1e9))
        self._seen = found
        self.settling = frozenset(settling)
        self.by_hash = {seen.sha256: name for name, seen in found.items()}
        return files

    def learn(self, name: str, sha256: str) -> None:
        """`name` was just written here with verified content `sha256` (fetched): published
        at the next scan as it is, not taken for a file still being written."""
        st = os.lstat(self.boot_dir / name)
        if stat.S_ISREG(st.st_mode):
            self._seen[name] = _Seen(st.st_size, st.st_mtime_ns, st.st_ino, sha256)

    def sha256_of(self, name: str) -> str | None:
        seen = self._seen.get(name)
        return seen.sha256 if seen is not None else None

    def path_for(self, sha256: str) -> Path | None:
        """The indexed file with this content (what `/payload/SHA256` serves)."""
        name = self.by_hash.get(sha256)
        return self.boot_dir / name if name is not None else None


def _hash_if_still(dir_fd: int, name: str, before: os.stat_result) -> _Seen | None:
    """The file's hash, or None if it is not the file `before` describes or changed while
    it was read."""
    digest = hashlib.sha256()
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
        after = os.fstat(f.fileno())
    key = (before.st_size, before.st_mtime_ns, before.st_ino)
    if (after.st_size, after.st_mtime_ns, after.st_ino) != key:
        return None
    return _Seen(*key, sha256=digest.hexdigest())


def fetch_payload(boot_dir: Path, wanted: Wanted, *, max_bytes: int) -> str:
    """Fetch `wanted` into `boot_dir` from the first of its sources that sends the right
    bytes; the source used. Raises `PayloadRefused` (nothing written) otherwise."""
    try:
        parts = check_relative(PurePosixPath(wanted.name))
    except UnsafePath:
        raise PayloadRefused(f"payload name {wanted.name!r} is not a path inside the boot "
                             "directory", hint="a database row names it; remove the row") from None
    if not is_sha256(wanted.sha256):
        raise PayloadRefused(f"payload {wanted.name!r} has no valid SHA-256")
    if not 0 <= wanted.size <= max_bytes:
        raise PayloadRefused(f"payload {wanted.name!r} is {wanted.size} bytes, over the "
                             f"limit of {max_bytes}", hint="raise --limit payload_bytes")
    errors = []
    for source in wanted.sources:
        try:
            _fetch_from(source, boot_dir, parts, wanted)
            return source
        except (OSError, PayloadRefused, UnsafePath) as exc:
            errors.append(f"{source}: {exc}")
    raise PayloadRefused(f"no server sent {wanted.name} ({wanted.sha256[:12]}…): "
                         + ("; ".join(errors) or "none holds it"),
                         hint="check the other servers run (`oneroot status` on them)")


def _fetch_from(source: str, boot_dir: Path, parts: tuple[str, ...], wanted: Wanted) -> None:
    url = f"{source}/payload/{wanted.sha256}"
    with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as response, \
            open_dir(boot_dir, parts[:-1], create=True) as dir_fd, \
            atomic_file(dir_fd, parts[-1], mode=0o644) as out:
        digest = hashlib.sha256()
        received = 0
        while chunk := response.read(CHUNK):
            received += len(chunk)
            if received > wanted.size:
                raise PayloadRefused(f"sent more than the {wanted.size} bytes announced")
            digest.update(chunk)
            out.write(chunk)
        if received != wanted.size or digest.hexdigest() != wanted.sha256:
            raise PayloadRefused(f"sent {received} bytes with SHA-256 "
                                 f"{digest.hexdigest()[:12]}…, not the one wanted")
