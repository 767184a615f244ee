"""`oneroot image exec IMAGE -- CMD` makes a new version of IMAGE; the versions before it are
never touched.

The command runs in a chroot of an overlay whose lower layer is the latest version (read-only)
and whose upper layer is a fresh directory: whatever it writes lands in the upper layer. Only
when it exits 0 is the version made:
1. a hardlink farm of the parent (`cp -al`: new directories, every file a link to the
   parent's inode, ~no data),
2. the upper layer moved into it entry by entry: a file replaces the link (a rename on the
   same filesystem: no copy), a `c 0 0` whiteout removes the path, an opaque directory drops
   what the parent had there; overlayfs's own `trusted.overlay.*` attributes are dropped,
3. synced (syncfs), renamed from `.N.build/root` to `N`, recorded complete.
A failed command, or anything failing before step 3, leaves no version: the build dir and the
`building` record are removed, and the parent was only ever a read-only lower layer.

Why not the others (measured, see bench/results/image.md): `cp --reflink` needs btrfs/xfs
(a full copy elsewhere: ext4 here); a plain hardlink farm without the overlay lets dpkg's
in-place writes (its logs, `chmod`s) reach every version sharing the inode; an overlay stack
exported as it is grows one NFS layer per version and needs a flatten anyway.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import logging
import os
import re
import shlex
import shutil
import stat
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from oneroot.errors import ConfigError, ExternalToolError, UsageError
from oneroot.inventory.store import InventoryStore
from oneroot.model.cluster import ImageVersion
from oneroot.model.paths import Paths
from oneroot.ops.image_exec import (
    CHROOT_ENV,
    ExecResult,
    TreeChanges,
    _dpkg_packages,
    _mount,
    _skipped,
    _umount,
    chroot_ready,
    compare_packages,
    record_changes,
)
from oneroot.ops.image_versions import (
    abandon_version,
    begin_version,
    build_dir,
    find_image,
    finish_version,
    image_lock,
    record_version,
)
from oneroot.ops.initramfs_build import build_boot_initramfs

log = logging.getLogger(__name__)

OVERLAY_XATTRS = "trusted.overlay."
OPAQUE_XATTR = "trusted.overlay.opaque"


@dataclass(slots=True)
class Flattened:
    """What moving an upper layer into a version changed, against its parent."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    added_bytes: int = 0  # regular files that are new inodes in the version
    dropped_bytes: int = 0  # regular files of the parent the version no longer has

    def tree_changes(self) -> TreeChanges:
        def keep(paths: list[str]) -> tuple[str, ...]:
            return tuple(sorted(p for p in paths if not _skipped(p + "/") and
                                p.split("/", 1)[0] not in ("proc", "sys", "dev", "run", "tmp")))
        return TreeChanges(added=keep(self.added), changed=keep(self.changed),
                           removed=keep(self.removed))


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _tree_bytes(path: Path) -> int:
    """Bytes of the regular files under `path` (apparent sizes; not following links)."""
    total = 0
    stack = [path]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(Path(entry.path))
                elif stat.S_ISREG(st.st_mode):
                    total += st.st_size
    return total


def _remove(path: Path, st: os.stat_result) -> int:
    """Remove `path` (a tree too); the bytes of regular files that went."""
    if stat.S_ISDIR(st.st_mode):
        size = _tree_bytes(path)
        shutil.rmtree(path)
        return size
    os.unlink(path)
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def _drop_overlay_xattrs(path: Path) -> None:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EPERM):
            return
        raise
    for name in names:
        if name.startswith(OVERLAY_XATTRS):
            os.removexattr(path, name, follow_symlinks=False)


def _opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _same_entry(a: os.stat_result, b: os.stat_result) -> bool:
    """The upper copy is the parent's entry unchanged (a copy-up with no change)."""
    return (a.st_mode, a.st_uid, a.st_gid, a.st_size, a.st_mtime_ns) == (
        b.st_mode, b.st_uid, b.st_gid, b.st_size, b.st_mtime_ns) and not stat.S_ISCHR(a.st_mode)


def _merge_dir(upper: Path, dest: Path, parent: Path, rel: str, st: os.stat_result,
               out: Flattened) -> bool:
    """Make `dest/rel` the directory the upper layer has; True: descend into it."""
    target = dest / rel
    tst = _lstat(target)
    if tst is not None and not stat.S_ISDIR(tst.st_mode):
        out.dropped_bytes += _remove(target, tst)
        tst = None
    if tst is None:
        os.mkdir(target)
        (out.changed if _lstat(parent / rel) is not None else out.added).append(rel)
    elif _opaque(upper / rel):  # the command replaced the directory: nothing of the parent's
        for child in os.listdir(target):
            cst = os.lstat(target / child)
            out.dropped_bytes += _remove(target / child, cst)
            out.removed.append(f"{rel}/{child}")
    os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)
    os.chmod(target, stat.S_IMODE(st.st_mode))
    return True


def _merge_entry(upper: Path, dest: Path, parent: Path, rel: str, st: os.stat_result,
                 out: Flattened) -> None:
    """Move one non-directory entry of the upper layer into `dest` (or apply its whiteout)."""
    target = dest / rel
    tst = _lstat(target)
    if _is_whiteout(st):
        if tst is not None:
            out.dropped_bytes += _remove(target, tst)
            out.removed.append(rel)
        return
    pst = _lstat(parent / rel)
    if pst is not None and tst is not None and _same_entry(pst, st) and (
            not stat.S_ISLNK(st.st_mode) or os.readlink(upper / rel) == os.readlink(target)):
        return  # copied up but not changed: keep the link to the parent's inode
    if tst is not None:
        out.dropped_bytes += _remove(target, tst)
    os.rename(upper / rel, target)
    _drop_overlay_xattrs(target)
    (out.changed if pst is not None else out.added).append(rel)
    if stat.S_ISREG(st.st_mode):
        out.added_bytes += st.st_size


def flatten(parent: Path, upper: Path, dest: Path) -> Flattened:
    """`dest` (must not exist) becomes `parent` with the overlay upper layer `upper` applied:
    a hardlink farm of the parent, the upper's entries moved in. `upper` is consumed."""
    # A parent on another filesystem (version 1 of an image outside `HOME/images`, which is a
    # filesystem of its own with layer_fs=own: ops.imagefs) is copied once; links after that.
    linked = os.stat(parent).st_dev == os.stat(dest.parent).st_dev
    how = "-al" if linked else "-a"
    done = subprocess.run(["cp", how, "--", str(parent), str(dest)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise ExternalToolError(f"cp {how} {parent} {dest} failed: {done.stderr.strip()}",
                                hint="check the space left under the image's versions")
    out = Flattened()
    dirs: list[tuple[str, os.stat_result]] = []
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(upper / rel_dir if rel_dir else upper) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                if _merge_dir(upper, dest, parent, rel, st, out):
                    dirs.append((rel, st))
                    stack.append(rel)
            else:
                _merge_entry(upper, dest, parent, rel, st, out)
    for rel, st in reversed(dirs):  # times last: moving entries in changed them
        os.utime(dest / rel, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    return out


def _overlay_option(path: Path) -> str:
    text = str(path)
    if any(c in text for c in ",:\\\n"):
        raise ConfigError(f"{text} holds a character overlayfs options cannot carry",
                          hint="keep oneroot's home and images under plain paths")
    return text


def run_in_overlay(lower: Path, build: Path, command: Sequence[str], *,
                   chroot: str = "chroot") -> int:
    """Run `command` chrooted in an overlay of `lower` whose writes land in `build/upper`;
    unmounted on the way out. Returns the exit code."""
    upper, work, merged = build / "upper", build / "work", build / "merged"
    for d in (upper, work, merged):
        d.mkdir(parents=True)
    try:
        _mount("-t", "overlay", "overlay", "-o",
               f"lowerdir={_overlay_option(lower)},upperdir={_overlay_option(upper)},"
               f"workdir={_overlay_option(work)}", str(merged))
    except ExternalToolError as exc:
        raise ExternalToolError(
            exc.message, hint="the command runs in an overlayfs over the image: the image and "
            f"{build.parent} must be on a local filesystem (ext4, xfs, btrfs; not NFS or an "
            "overlayfs), and oneroot runs as root; `dmesg | tail` says why") from None
    try:
        with chroot_ready(merged):
            return subprocess.run([chroot, str(merged), *command], env=CHROOT_ENV).returncode
    finally:
        _umount(merged)


def exec_new_version(store: InventoryStore, paths: Paths, name: str, command: Sequence[str],
                     *, chroot: str = "chroot", record: bool = True,
                     now: datetime.datetime | None = None) -> ExecResult:
    """Run `command` over image `name`'s latest version; on exit 0 its changes become the
    next version (`result.version`). On failure no version is left (`result.version` None)."""
    if not command:
        raise UsageError("no command given", hint="e.g. oneroot image exec lab -- apt-get "
                                                  "install -y htop")
    if shutil.which(chroot) is None:
        raise ExternalToolError(f"{chroot} not found", hint="install coreutils")
    t0 = datetime.datetime.now(datetime.UTC)
    started = (now or t0).replace(microsecond=0)
    with image_lock(paths, name):
        parent = find_image(store.load(), name).latest()
        version = begin_version(store, paths, name, command=shlex.join(command),
                                parent=parent.number, now=started.timestamp())
        build = build_dir(paths, name, version.number)
        try:
            rc, done, changes = _build(store, paths, name, version, parent, build, command,
                                       chroot=chroot)
        except BaseException:
            abandon_version(store, paths, name, version)
            raise
        shutil.rmtree(build, ignore_errors=True)
    root = Path(done.root if done is not None else parent.root)
    result = ExecResult(
        image=name, root=root, command=tuple(command), returncode=rc, chroot=True,
        files=changes.tree_changes() if changes else None,
        packages=compare_packages(_dpkg_packages(Path(parent.root)), _dpkg_packages(root)),
        log_path=None, started=started,
        seconds=(datetime.datetime.now(datetime.UTC) - t0).total_seconds(),
        version=done.number if done is not None else None, parent=parent.number)
    if record:
        result = record_changes(paths.home, result)
        if done is not None:
            record_version(store, name, dataclasses.replace(done,
                                                            changes=str(result.log_path)))
    log.info("image_build.done image=%s rc=%d version=%s seconds=%.1f", name, rc,
             result.version, result.seconds)
    return result


def _build(store: InventoryStore, paths: Paths, name: str, version: ImageVersion,
           parent: ImageVersion, build: Path, command: Sequence[str], *, chroot: str
           ) -> tuple[int, ImageVersion | None, Flattened | None]:
    rc = run_in_overlay(Path(parent.root), build, command, chroot=chroot)
    if rc != 0:
        abandon_version(store, paths, name, version)
        return rc, None, None
    started = time.monotonic()
    tree = build / "root"
    changes = flatten(Path(parent.root), build / "upper", tree)
    size = (parent.size or _tree_bytes(Path(parent.root))) + changes.added_bytes \
        - changes.dropped_bytes
    kernel, initramfs = version_boot_files(store, paths, name, version.number, tree, parent)
    done = finish_version(store, paths, name, version, tree, size=size,
                          added=changes.added_bytes, kernel=kernel, initramfs=initramfs)
    log.info("image_build.flattened image=%s version=%d added=%d changed=%d removed=%d "
             "seconds=%.2f", name, done.number, len(changes.added), len(changes.changed),
             len(changes.removed), time.monotonic() - started)
    return rc, done, changes


def image_kernel(tree: Path) -> Path | None:
    """The kernel an image root provides: what its `/vmlinuz` link names (Debian keeps it on
    the newest), else its only or newest `boot/vmlinuz-*`; None: it has none."""
    link = tree / "vmlinuz"
    if link.is_symlink():
        target = os.readlink(link).lstrip("/")
        if (tree / target).is_file() and (tree / target).name.startswith("vmlinuz-"):
            return tree / target
    found = sorted((tree / "boot").glob("vmlinuz-*"),
                   key=lambda p: [int(x) if x.isdigit() else x for x in
                                  re.split(r"(\d+)", p.name)])
    return found[-1] if found else None


def version_boot_files(store: InventoryStore, paths: Paths, name: str, number: int,
                       tree: Path, parent: ImageVersion) -> tuple[str, str]:
    """The kernel and initramfs version `number` boots, relative to the boot dir ("", "":
    the profile's). An image that provides a kernel gets oneroot's initramfs built for it
    (its own modules) into BOOT_DIR/images/NAME/N/, beside a copy of the kernel; a version
    whose kernel is its parent's (the same inode: untouched by the command) shares the
    parent's files."""
    vmlinuz = image_kernel(tree)
    if vmlinuz is None:
        return "", ""
    if parent.kernel and parent.initramfs:
        before = Path(parent.root) / vmlinuz.relative_to(tree)
        if before.exists() and os.path.samefile(before, vmlinuz):
            return parent.kernel, parent.initramfs
    inv = store.load()
    rel = Path("images") / name / str(number)
    out = Path(inv.settings.boot_dir) / rel / "initramfs.img"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        build_boot_initramfs(inv, paths, kernel=str(tree), out=out,
                             kernel_version=vmlinuz.name.removeprefix("vmlinuz-"))
    except BaseException:
        shutil.rmtree(out.parent, ignore_errors=True)
        raise
    return str(rel / "vmlinuz"), str(rel / "initramfs.img")
