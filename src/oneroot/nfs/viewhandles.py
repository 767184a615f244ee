"""What stops a forged file handle at the masked view (docs/security.md, "Forged file handles").

The view (`view`) hides a file with a whiteout in its upper: by name only. overlayfs
(`nfs_export=on`) decodes a handle of a lower *non-directory* without looking at its path
(`ovl_lower_fh_to_d`), so a handle carrying a masked file's leaked inode and generation reads
it through the view, masks or not. What overlayfs does check before it hands out such a file
is its index: a whiteout at `<workdir>/index/<origin handle in hex>` makes the decode answer
ESTALE (`ovl_get_index_fh`). The kernel writes those itself when a file is unlinked through
an `nfs_export` overlay ("whiteout orphan index to block future open by handle"), and keeps
them across mounts; this module writes them for what the masks hid when the view was built.

`block_masked_handles` puts one such whiteout for every non-directory the masks hide: a
hidden file, and every entry below a hidden or emptied directory, on the lower's own
filesystem (the lower layer decodes no other filesystem's inodes). It runs after each mount
and each rescan of a view (a file created below a masked directory later is blocked by the
next rescan). Directories need none: overlayfs reconnects a directory through its path, and a
masked one is refused already.

Costs, and what it breaks: the first pass, one `name_to_handle_at` and one `mknod` in the
view's tmpfs per file (bounded: `BLOCK_LIMIT` per pass); a rescan lists only directories
changed since (their ctime and subdirectories, remembered in the view's tmpfs) and opens the
others. In kernel memory each whiteout is an inode and a dentry of the tmpfs (~1 KiB). A file of
the view that is also a hard link of a masked one answers EIO instead of its contents
(fail-closed), until the view is mounted again.

Not a boundary: overlayfs names the index entry after the handle's bytes as the client sent
them, and its decoder accepts other spellings of the same handle (`OVL_FH_FLAG_ANY_ENDIAN` in
the flags, bytes appended after the lower handle, which ext4 ignores). Those miss the
whiteout and read the file (measured with nfs-ganesha, docs/security.md): this stops the
canonical handle (the one a leak of a real handle gives verbatim) and nothing more. On ext4 no
leak is needed either: a handle with generation 0 means "any generation"
(`ext4_nfs_get_inode`), so a node scanning inode numbers finds every file. What stops the
read then is the view's `all_squash` (nodes are nobody there), so what is exposed is the
world-readable files below the masks: `exposed_by_handle` lists them, for doctor.

knfsd's `subtree_check` cannot do this: overlayfs encodes no connectable handle
(`ovl_encode_fh` refuses a parent, `ovl_fh_to_parent` says "use 'no_subtree_check'"), so with
it every file of the view would answer an error.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from oneroot.fsutil import DIR_FLAGS, MAX_DEPTH, WHITEOUT_DEVICE, lstat_at, write_atomic

log = logging.getLogger(__name__)

ORIGIN_XATTR = "trusted.overlay.origin"
OVL_FH_MAGIC = 0xFB
OVL_FB_HEADER = 21  # version, magic, len, flags, type, 16 bytes of uuid (struct ovl_fb)
MAX_HANDLE_SZ = 128
# Files blocked per pass; past it the pass stops (`nfs.view.handles_left`) and the next one
# goes on from the directories not done yet.
BLOCK_LIMIT = 500_000


@dataclass(frozen=True, slots=True, kw_only=True)
class OriginHeader:
    """The parts of overlayfs's origin handle (`struct ovl_fb`) that are the same for every
    file of the lower layer: version, magic, flags and the lower filesystem's uuid."""

    flags: int
    uuid: bytes

    @classmethod
    def from_xattr(cls, origin: bytes) -> OriginHeader:
        """From the upper root's `trusted.overlay.origin` (the lower root's handle, which
        overlayfs writes there when it mounts with `index=on`)."""
        if (len(origin) < OVL_FB_HEADER or origin[0] != 0 or origin[1] != OVL_FH_MAGIC
                or origin[2] != len(origin)):
            raise ValueError(f"not an overlayfs origin handle: {origin.hex()}")
        return cls(flags=origin[3], uuid=origin[5:OVL_FB_HEADER])

    def index_name(self, handle_type: int, fid: bytes) -> str:
        """The index entry overlayfs looks up for the lower file whose own handle
        (`name_to_handle_at`) is `handle_type`, `fid` (`ovl_get_index_name_fh`)."""
        size = OVL_FB_HEADER + len(fid)
        if size > 255 or not 0 <= handle_type <= 255:
            raise ValueError(f"lower handle too long or of an odd type ({handle_type})")
        return (bytes((0, OVL_FH_MAGIC, size, self.flags, handle_type)) + self.uuid
                + fid).hex()


class FileHandle(ctypes.Structure):
    """struct file_handle (name_to_handle_at, open_by_handle_at)."""

    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int),
                ("f_handle", ctypes.c_ubyte * MAX_HANDLE_SZ)]


_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
AT_FDCWD = -100


def handle_at(dir_fd: int, name: str) -> tuple[int, bytes]:
    """name_to_handle_at(2) of `name` in `dir_fd`, not following a final link: (type, fid)."""
    fh = FileHandle(handle_bytes=MAX_HANDLE_SZ)
    mount_id = ctypes.c_int()
    if _LIBC.name_to_handle_at(dir_fd, os.fsencode(name), ctypes.byref(fh),
                               ctypes.byref(mount_id), 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), name)
    return fh.handle_type, bytes(fh.f_handle[:fh.handle_bytes])


@dataclass(slots=True)
class _Blocker:
    header: OriginHeader
    index_fd: int
    dev: int
    # directories done: "dev:ino" -> (ctime_ns then, names of its subdirectories)
    walked: dict[str, tuple[int, tuple[str, ...]]]
    done: dict[str, tuple[int, tuple[str, ...]]] = field(default_factory=dict)  # this pass's
    seen: int = 0
    added: int = 0

    def block(self, dir_fd: int, name: str) -> None:
        self.seen += 1
        try:
            index = self.header.index_name(*handle_at(dir_fd, name))
            os.mknod(index, 0o600 | stat.S_IFCHR, WHITEOUT_DEVICE, dir_fd=self.index_fd)
        except FileExistsError:
            return
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ESTALE):
                return  # removed while we walked
            raise
        self.added += 1

    def subdir(self, dir_fd: int, name: str, depth: int) -> None:
        try:
            sub = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
        except OSError:
            return  # replaced by a link or removed while we walked
        try:
            if os.fstat(sub).st_dev == self.dev and depth <= MAX_DEPTH:
                self.tree(sub, depth)
        finally:
            os.close(sub)  # another filesystem (a mount point): the lower layer shows none

    def tree(self, dir_fd: int, depth: int) -> None:
        """Every entry below `dir_fd`. A directory whose ctime is what it was when it was
        last done (an entry added, removed or renamed in it changes it) is not listed again:
        its files are blocked already, its subdirectories are remembered."""
        st = os.fstat(dir_fd)  # before the listing: an entry added meanwhile is seen next time
        key = f"{st.st_dev}:{st.st_ino}"
        before = self.walked.get(key)
        if before is not None and before[0] == st.st_ctime_ns:
            self.done[key] = before
            for name in before[1]:
                self.subdir(dir_fd, name, depth + 1)
            return
        subdirs: list[str] = []
        with os.scandir(dir_fd) as entries:
            for entry in entries:
                if self.seen >= BLOCK_LIMIT:
                    return  # not done: the next pass lists it again
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(entry.name)
                    self.subdir(dir_fd, entry.name, depth + 1)
                else:
                    self.block(dir_fd, entry.name)
        self.done[key] = (st.st_ctime_ns, tuple(subdirs))


def _load_walked(cache: Path) -> dict[str, tuple[int, tuple[str, ...]]]:
    try:
        data = json.loads(cache.read_bytes())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: (v[0], tuple(v[1])) for k, v in data.items()
            if isinstance(v, list) and len(v) == 2 and isinstance(v[0], int)
            and isinstance(v[1], list) and all(isinstance(n, str) for n in v[1])}


def block_masked_handles(lower: Path, upper: Path, index: Path,
                         masked: list[PurePosixPath], *, cache: Path) -> int:
    """Whiteouts in the mounted view's `index` for every non-directory at or below the
    `masked` paths (relative to `lower`); the number added. `upper` is the view's upper dir
    (its root carries the origin handle overlayfs wrote at mount); `cache` (in the view's
    tmpfs: it lives as long as the index) remembers the directories done, so a rescan lists
    only those changed since."""
    header = OriginHeader.from_xattr(os.getxattr(upper, ORIGIN_XATTR))
    index_fd = os.open(index, DIR_FLAGS)
    try:
        blocker = _Blocker(header=header, index_fd=index_fd, dev=os.lstat(lower).st_dev,
                           walked=_load_walked(cache))
        for rel in masked:
            try:
                parent = os.open(lower / rel.parent, DIR_FLAGS)
            except OSError:
                continue  # gone, or a link on the way: the mask's own walk decides again
            try:
                st = lstat_at(parent, rel.name)
                if st is not None and stat.S_ISDIR(st.st_mode):
                    blocker.subdir(parent, rel.name, 1)
                elif st is not None and st.st_dev == blocker.dev:
                    blocker.block(parent, rel.name)
            finally:
                os.close(parent)
    finally:
        os.close(index_fd)
    write_atomic(cache, json.dumps(blocker.done).encode(), mode=0o600)
    if blocker.seen >= BLOCK_LIMIT:
        log.warning("nfs.view.handles_left lower=%s limit=%d reason=%s", lower, BLOCK_LIMIT,
                    "more new entries below the masks than one pass blocks: the next goes on")
    if blocker.added:
        log.info("nfs.view.handles_blocked lower=%s added=%d seen=%d", lower, blocker.added,
                 blocker.seen)
    return blocker.added


# Entries `exposed_by_handle` looks at per view (doctor's bound, not the blocker's).
EXPOSURE_LIMIT = 200_000
_NOBODY = 65534  # the view's anonuid/anongid (all_squash): what every node user is there


@dataclass(slots=True)
class Exposure:
    """World-readable files below a view's masks: a node reads them by forged handle."""

    count: int = 0
    examples: list[PurePosixPath] = field(default_factory=list)
    looked_at: int = 0
    complete: bool = True

    def note(self, rel: PurePosixPath, st: os.stat_result) -> None:
        self.looked_at += 1
        if not stat.S_ISREG(st.st_mode):
            return
        mode = st.st_mode
        if (mode & stat.S_IROTH or (st.st_uid == _NOBODY and mode & stat.S_IRUSR)
                or (st.st_gid == _NOBODY and mode & stat.S_IRGRP)):
            self.count += 1
            if len(self.examples) < 5:
                self.examples.append(rel)


def exposed_by_handle(lower: Path, masked: list[PurePosixPath], *,
                      limit: int = EXPOSURE_LIMIT) -> Exposure:
    """The regular files at or below the `masked` paths (relative to `lower`), on the lower's
    own filesystem, that nobody (the view's squashed user) may read: what a forged handle of
    any spelling reads through the view. Stops after `limit` entries (`complete` False)."""
    out = Exposure()
    dev = os.lstat(lower).st_dev

    def tree(dir_fd: int, rel: PurePosixPath, depth: int) -> None:
        with os.scandir(dir_fd) as entries:
            for entry in entries:
                if out.looked_at >= limit:
                    out.complete = False
                    return
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # removed while we walked
                if st.st_dev != dev:
                    continue  # a mount point: the lower layer shows none of it
                if stat.S_ISDIR(st.st_mode):
                    out.looked_at += 1
                    if depth < MAX_DEPTH:
                        subtree(dir_fd, entry.name, rel / entry.name, depth + 1)
                else:
                    out.note(rel / entry.name, st)

    def subtree(dir_fd: int, name: str, rel: PurePosixPath, depth: int) -> None:
        try:
            sub = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
        except OSError:
            return  # replaced by a link or removed while we walked
        try:
            tree(sub, rel, depth)
        finally:
            os.close(sub)

    for rel in masked:
        try:
            parent = os.open(lower / rel.parent, DIR_FLAGS)
        except OSError:
            continue
        try:
            st = lstat_at(parent, rel.name)
            if st is None or st.st_dev != dev:
                continue
            if stat.S_ISDIR(st.st_mode):
                subtree(parent, rel.name, rel, 1)
            else:
                out.note(rel, st)
        finally:
            os.close(parent)
        if not out.complete:
            break
    return out
