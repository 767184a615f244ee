"""The block form of `union=block` nodes: an image version's read-only EROFS file and a
node's writable ext4 top, both made in userspace (mkfs.erofs, mkfs.ext4) as files.

An EROFS build is reproducible: the same tree, `epoch` and `label` give the same bytes. The
UUID is derived from `label`; `SOURCE_DATE_EPOCH=epoch` is the superblock's time and clamps
any file newer than it (a version's files are all older than its completion time, so their
mtimes are kept). The guest kernel reads EROFS uncompressed or lz4 (no LZMA): `compress` is
"none", "lz4" or "lz4hc". Every file is written to a temp name, fsynced and renamed.
"""

from __future__ import annotations

import enum
import hashlib
import os
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from oneroot.errors import ExternalToolError
from oneroot.fsutil import fsync_path

# The top's own directories: overlayfs' upperdir and workdir, made by mkfs.ext4 -d.
TOP_DIRS = ("upper", "work")


class Compression(enum.StrEnum):
    NONE = "none"
    LZ4 = "lz4"
    LZ4HC = "lz4hc"


@dataclass(frozen=True, slots=True, kw_only=True)
class BlockBuild:
    """One EROFS file made: where, what it holds (`label`: `lab@3`), its size, how long it
    took and when (`built`, wall clock). `to_json` is what its record file keeps."""

    path: Path
    label: str
    size: int
    seconds: float
    sha256: str
    compress: Compression
    epoch: int
    built: float

    def to_json(self) -> dict[str, object]:
        return {"image": self.label, "size": self.size, "seconds": round(self.seconds, 3),
                "sha256": self.sha256, "compress": self.compress.value, "epoch": self.epoch,
                "built": self.built}


def erofs_uuid(label: str) -> str:
    """The filesystem UUID of `label`'s image (`lab@3`): the same for every build."""
    return str(uuid.UUID(bytes=hashlib.sha256(label.encode()).digest()[:16], version=4))


def _run(argv: list[str], *, env: dict[str, str] | None = None) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env)
    except FileNotFoundError:
        raise ExternalToolError(f"{argv[0]} is not installed",
                                hint="install erofs-utils and e2fsprogs "
                                     "(scripts/install-packages)") from None
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise ExternalToolError(f"{argv[0]} failed (exit {done.returncode}): {last[0]}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def build_erofs(tree: Path, dest: Path, *, label: str, epoch: int,
                compress: Compression = Compression.NONE,
                excludes: tuple[str, ...] = ()) -> BlockBuild:
    """`tree` as a read-only EROFS file at `dest` (replaced atomically)."""
    if not tree.is_dir():
        raise ExternalToolError(f"{tree} is not a directory: no EROFS to build from it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".oneroot-tmp",
                                    dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    argv = ["mkfs.erofs", "--quiet", f"-U{erofs_uuid(label)}", "--preserve-mtime"]
    if compress is not Compression.NONE:
        argv.append(f"-z{compress.value}")
    argv += [f"--exclude-path={path}" for path in excludes]
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}
    start = time.monotonic()
    try:
        _run([*argv, str(tmp), str(tree)], env=env)
        os.chmod(tmp, 0o644)
        fsync_path(tmp)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    seconds = time.monotonic() - start
    fsync_path(dest.parent, directory=True)
    return BlockBuild(path=dest, label=label, size=dest.stat().st_size, seconds=seconds,
                      sha256=_sha256(dest), compress=compress, epoch=epoch, built=time.time())


def make_ext4_top(dest: Path, *, size: int, label: str, upper_from: Path | None = None) -> None:
    """A new ext4 file of `size` bytes at `dest` holding `upper/` and `work/` (root 0755): a
    node's writable top, its `upper/` a copy of `upper_from` (the identity files oneroot
    wrote; links copied as links). Made with mkfs.ext4 in userspace (never mounted here);
    `dest` is created exclusively, so an existing top is never replaced."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="oneroot-top-skel.") as skel:
        for name in TOP_DIRS:
            os.mkdir(Path(skel) / name, 0o755)
        if upper_from is not None and upper_from.is_dir() and not upper_from.is_symlink():
            _run(["cp", "-a", "--no-dereference", f"{upper_from}/.", f"{skel}/upper/"])
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".oneroot-tmp",
                                        dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            try:
                os.ftruncate(fd, size)
            finally:
                os.close(fd)
            _run(["mkfs.ext4", "-q", "-F", "-L", label[:16], "-E", "root_owner=0:0",
                  "-d", skel, str(tmp)])
            os.chmod(tmp, 0o600)
            fsync_path(tmp)
            os.link(tmp, dest)  # fails if a top exists: never replaced here
        finally:
            tmp.unlink(missing_ok=True)
