"""A consistent copy of a live overlay upper: what a `lab try` canary of a `union=server` node
reads instead of the upper the server's union writes (`ops.lab_try`).

    snapshot_tree(NODE_DIR/upper, CANARY_DIR/snapshot, limit=...)
        -> CANARY_DIR/snapshot/upper  (the copy)  and  CANARY_DIR/snapshot/work  (empty)

The two subdirectories make the initramfs read `upper/` as the layer's files, as it does for
a node's own directory. The source is only read: never opened for writing, never locked, its
union never remounted.

How: `cp -a --reflink=always` first (XFS with reflink, btrfs: every file shares its blocks
until one side writes, so the copy costs metadata only); where the filesystem cannot clone
(ext4, or another filesystem than the source's) a plain `cp -a`, refused before a byte is
copied when the upper holds more than `limit` bytes (`SnapshotRefused`).

Consistency without stopping the node: the upper is listed before and after the copy (type,
inode, size, mtime, ctime of every entry); the copy is kept only when nothing changed in
between, so it is the upper as it was at one moment. Otherwise it is thrown away and taken
again, `tries` times at most, then refused. (A stat marks the inode's ctime as queried, and
since Linux 6.13 the next change of an ext4/XFS/btrfs/tmpfs inode then gets a fine-grained
ctime, so a change right after the first listing is seen too.) The source is walked without
following links (`fsutil.walk`), bounded in depth and in entries.
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from oneroot.errors import ConfigError, ExternalToolError
from oneroot.fsutil import open_dir, remove_tree, walk

DEFAULT_COPY_LIMIT = 1 << 30  # bytes a snapshot may copy where the filesystem cannot reflink
MAX_ENTRIES = 1_000_000  # entries of an upper a snapshot lists
TRIES = 3  # copies taken before a layer that keeps changing is refused
UPPER, WORK = "upper", "work"

Entry = tuple[int, int, int, int, int]  # mode, inode, size, mtime_ns, ctime_ns


class SnapshotRefused(ConfigError):
    """The layer cannot be snapshotted: too large to copy, too many entries, or it kept
    changing while it was copied."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    path: Path  # holds upper/ (the copy) and work/
    method: str  # "reflink" or "copy"
    entries: int
    bytes: int  # of the regular files (apparent size)
    seconds: float
    tries: int


def _listing(fd: int, *, max_entries: int, shown: str) -> tuple[dict[tuple[str, ...], Entry],
                                                                int]:
    entries: dict[tuple[str, ...], Entry] = {}
    size = 0
    for parts, st, _parent in walk(fd, same_dev=os.fstat(fd).st_dev):
        if len(entries) >= max_entries:
            raise SnapshotRefused(f"{shown} holds more than {max_entries} entries: not copied",
                                  hint="the canary needs a copy of the layer; clean it up "
                                       "or try a node with a smaller one")
        entries[parts] = (st.st_mode, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if stat.S_ISREG(st.st_mode):
            size += st.st_size
    return entries, size


def _cp(fd: int, dest: Path, *, reflink: bool) -> subprocess.CompletedProcess[str]:
    # The source by its descriptor (checked without following links), never by its path again.
    argv = ["cp", "-a", *(["--reflink=always"] if reflink else []), f"/proc/self/fd/{fd}/.",
            str(dest)]
    return subprocess.run(argv, capture_output=True, text=True, check=False, pass_fds=(fd,),
                          stdin=subprocess.DEVNULL)


def _changed(before: dict[tuple[str, ...], Entry], after: dict[tuple[str, ...], Entry]
             ) -> str:
    for parts in sorted(before.keys() | after.keys()):
        if before.get(parts) != after.get(parts):
            return "/".join(parts)
    return ""


def snapshot_tree(source: Path, dest: Path, *, limit: int = DEFAULT_COPY_LIMIT,
                  tries: int = TRIES, max_entries: int = MAX_ENTRIES) -> Snapshot:
    """`dest/upper` a copy of `source` as it was at one moment, `dest/work` empty (`dest`
    must not exist; removed again on failure)."""
    started = time.monotonic()
    method, changed = "reflink", ""
    with open_dir(source) as fd:
        for attempt in range(1, tries + 1):
            before, size = _listing(fd, max_entries=max_entries, shown=str(source))
            os.mkdir(dest, 0o755)
            try:
                copied = _cp(fd, dest / UPPER, reflink=method == "reflink")
                if copied.returncode != 0 and method == "reflink":
                    if os.path.lexists(dest / UPPER):  # a partial clone
                        remove_tree(dest, (UPPER,))
                    method = "copy"
                    _check_size(source, size, limit)
                    copied = _cp(fd, dest / UPPER, reflink=False)
                if copied.returncode != 0:
                    raise ExternalToolError(f"copying {source} failed: "
                                            f"{copied.stderr.strip()[-300:]}",
                                            hint="is the canary's directory full?")
                os.mkdir(dest / WORK, 0o755)
                changed = _changed(before, _listing(fd, max_entries=max_entries,
                                                    shown=str(source))[0])
            except BaseException:
                remove_tree(dest.parent, (dest.name,))
                raise
            if not changed:
                return Snapshot(path=dest, method=method, entries=len(before), bytes=size,
                                seconds=time.monotonic() - started, tries=attempt)
            remove_tree(dest.parent, (dest.name,))
    raise SnapshotRefused(f"{source} kept changing while it was copied ({tries} tries; "
                          f"last: {changed})",
                          hint="try again when the node writes less (a canary needs its "
                               "layer as it was at one moment)")


def _check_size(source: Path, size: int, limit: int) -> None:
    if size > limit:
        raise SnapshotRefused(
            f"{source} holds {size / 2**20:.0f} MiB, over the {limit / 2**20:.0f} MiB a "
            "snapshot may copy where the filesystem cannot reflink",
            hint="raise it (`lab try --snapshot-limit SIZE`), or keep the layers on a "
                 "filesystem with reflinks (XFS, btrfs)")
