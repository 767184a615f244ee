"""Layers on filesystems of their own (`layer_fs=own`, the default with nfs-ganesha): each
node's and each group's layer directory is the mount point of an ext4 image of its own,
`<dir>/.layer-images/<name>.ext4` beside it, loop-mounted `nosuid,nodev`.

Why: nfs-ganesha's FSAL_VFS has no subtree check. It takes a handle whose filesystem id is
the export's own filesystem (or one mounted below the export's path) and opens the kernel
handle in it with `open_by_handle_at` (4.3: `FSAL_VFS/handle.c:vfs_check_handle`,
`localfs.c:claim_posix_filesystems`, `is_filesystem_exported`). Any other filesystem id is
refused (ESTALE). With the layer a filesystem of its own, a handle forged through a node's
export names objects of that node's layer only: the filesystem holding the state dir, the
server's `/` and other layers are other filesystems (tests/integration/
test_nfs_ganesha_handles.py attacks it). A bind mount or a btrfs subvolume would not do: the
kernel decodes a handle anywhere on the superblock.

`ensure_layer_fs(root, size=...)` is idempotent: it makes the image (sparse, formatted once),
moves a layer that is still a plain directory into it (copied with `cp -a`, the old tree kept
beside the images), and mounts it; `oneroot serve` runs it at every start (`apply_nfs`), so
the layers are mounted again after a reboot. `release_layer_fs` unmounts a removed layer and
deletes its image (after `archive_node_dir` saved it).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from oneroot.errors import ConfigError, ExternalToolError
from oneroot.nfs.view import MountEntry, mount_at, read_mounts

log = logging.getLogger(__name__)

IMAGES_DIR = ".layer-images"
DEFAULT_LAYER_SIZE = 32 << 30  # sparse: a layer takes what it holds; its size is its limit
SYS_FS = Path("/sys/fs")
LIVE_SUPERBLOCK_TYPES = ("ext4", "xfs")  # the filesystems oneroot makes in images


@dataclass(frozen=True, slots=True, kw_only=True)
class FsFormat:
    """How an image file is formatted and mounted (its name's suffix is the fstype)."""

    fstype: str
    mkfs: tuple[str, ...]
    options: str


# A 32 MiB journal (mkfs would take 128 MiB for 32 GiB); one inode per 64 KiB; no background
# zeroing of the inode tables (noinit_itable): the image stays sparse.
EXT4 = FsFormat(fstype="ext4", options="nosuid,nodev,noinit_itable",
                mkfs=("mkfs.ext4", "-q", "-F", "-m", "0", "-i", "65536", "-J", "size=32",
                      "-E", "lazy_itable_init=1,lazy_journal_init=1"))


def layer_image(root: Path, fmt: FsFormat = EXT4) -> Path:
    """Where the image of the layer at `root` lives."""
    return root.parent / IMAGES_DIR / f"{root.name}.{fmt.fstype}"


def run_tool(*argv: str, timeout: float = 300) -> str:
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        raise ExternalToolError(f"{' '.join(argv)} failed: {proc.stderr.strip()}",
                                hint="the layer was left as it was")
    return proc.stdout


def backing_file(source: str) -> Path | None:
    """The file behind a loop device (`/dev/loop3`), or None."""
    name = os.path.basename(source)
    try:
        text = Path(f"/sys/block/{name}/loop/backing_file").read_text().strip()
    except OSError:
        return None
    return Path(text) if text else None


def is_layer_fs(root: Path, fmt: FsFormat = EXT4) -> bool:
    """Whether `root` is mounted from its own layer image."""
    entry = mount_at(root)
    return entry is not None and backing_file(entry.source) == _real(layer_image(root, fmt))


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _make_image(image: Path, size: int, fmt: FsFormat) -> bool:
    """A sparse, formatted image; False when it exists (never formatted twice)."""
    if os.path.lexists(image):
        if not stat.S_ISREG(image.lstat().st_mode):
            raise ConfigError(f"{image} is not a regular file", hint="remove it")
        return False
    image.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = image.with_name(f".{image.name}.new")
    if os.path.lexists(partial):
        partial.unlink()
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    run_tool(*fmt.mkfs, str(partial))
    os.rename(partial, image)  # only a formatted image has the final name
    return True


def _has_content(root: Path) -> bool:
    with os.scandir(root) as it:
        return any(True for _ in it)


def _migrate(root: Path, image: Path, device: str, fmt: FsFormat) -> Path:
    """Copy a plain layer directory into its fresh image; the old tree is kept (renamed
    beside the images) and its new name returned."""
    staging = image.with_name(f"{root.name}.migrating")
    staging.mkdir(mode=0o700, exist_ok=True)
    mount_device(device, staging, fmt)
    try:
        run_tool("cp", "-a", "--sparse=always", f"{root}/.", f"{staging}/", timeout=3600)
        os.sync()
    finally:
        run_tool("umount", str(staging))
    staging.rmdir()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    kept = image.with_name(f"{root.name}.shared-{stamp}")
    mode = root.lstat().st_mode
    os.rename(root, kept)
    root.mkdir(mode=stat.S_IMODE(mode))
    return kept


def _hold(device: str, image: Path) -> int | None:
    """An open descriptor of `device` if it is (still) a loop device of `image`, else None.
    While it is open the kernel does not detach the device: a device `losetup -d` made
    autoclear is detached at its last close, so without it the last superblock going away
    (a copy in another namespace whose process exits) would take the device along between
    our choice of it and our mount ("can't read superblock")."""
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # gone, or being torn down (ENXIO)
        return None
    if backing_file(device) == _real(image):
        return fd
    os.close(fd)
    return None


@contextlib.contextmanager
def held_loop_device(image: Path, mounted: list[list[MountEntry]]) -> Iterator[str]:
    """The loop device to mount `image` from, held open (`_hold`) until the block ends: the
    one a mount in `mounted` (mount tables) uses, or one whose filesystem is mounted in any
    other namespace, so that there is only ever one superblock; else a new one (a device
    found by `losetup -j` alone may be one an unmount is tearing down). A held device whose
    superblock went away meanwhile is still bound to the image: mounting it makes the one
    superblock again."""
    in_tables = [entry.source for entries in mounted for entry in entries
                 if entry.source.startswith("/dev/loop")
                 and backing_file(entry.source) == _real(image)]
    for device in [*in_tables, *_live_loop_devices(image)]:
        fd = _hold(device, image)
        if fd is None:
            continue
        try:
            yield device
        finally:
            os.close(fd)
        return
    yield run_tool("losetup", "-f", "--show", str(image)).strip()


def _live_loop_devices(image: Path) -> list[str]:
    """The loop devices of `image` with a mounted filesystem, in whatever mount namespace: a
    process that unshared its mounts (a service with PrivateTmp, `ip netns exec`, `unshare
    -m`) keeps a copy of the layer's mount after ours is gone, and a second device would be
    a second superblock on one image: the files written through the first one unseen, the
    image corrupted. The kernel lists each mounted superblock in /sys/fs/TYPE/DEVICE."""
    found = []
    for line in run_tool("losetup", "-j", str(image)).splitlines():
        device = line.split(":", 1)[0]
        name = os.path.basename(device)
        if device.startswith("/dev/loop") and any(
                (SYS_FS / fstype / name).exists() for fstype in LIVE_SUPERBLOCK_TYPES):
            found.append(device)
    return found


def mount_device(device: str, at: Path, fmt: FsFormat, ns_pid: int | None = None) -> None:
    """Mount the layer's loop device (one superblock however many namespaces mount it)."""
    argv = ["mount", "-t", fmt.fstype, "-o", fmt.options, device, str(at)]
    if ns_pid is not None:
        argv = ["nsenter", "-t", str(ns_pid), "-m", "--", *argv]
    run_tool(*argv)


def _from_image(mounts: list[MountEntry], root: Path, image: Path) -> bool:
    entry = mount_at(root, mounts)
    return entry is not None and backing_file(entry.source) == _real(image)


def _check_plain_dir(root: Path, image: Path, *, server_running: bool,
                     elsewhere: bool) -> None:
    """Refuse to mount over a directory whose files would be hidden, or that a running NFS
    server may be exporting (`elsewhere`: the image is mounted in the server's namespace,
    so this is only ours catching up)."""
    if not os.path.lexists(root):
        return
    if not stat.S_ISDIR(root.lstat().st_mode):
        raise ConfigError(f"{root} is not a directory", hint="move it away")
    if os.path.lexists(image) and _has_content(root):
        raise ConfigError(f"{root} holds files under the mount point of its layer image "
                          f"{image}: mounting would hide them",
                          hint="move them away (or into the mounted layer), then `oneroot nfs "
                               "apply` again")
    if server_running and not elsewhere:
        raise ConfigError(f"{root} is a plain directory the running NFS server may export: "
                          "it would go on serving that directory, not the layer's own "
                          "filesystem", hint="stop `oneroot serve` and start it again: it "
                                             "mounts the layers before the NFS server starts")


def _check_mount_point(root: Path, image: Path) -> bool:
    """Whether `root` is mounted from `image` already; refuses any other mount there."""
    entry = mount_at(root)
    if entry is None:
        return False
    if backing_file(entry.source) == _real(image):
        return True
    raise ConfigError(f"{root} is already a mount point ({entry.fstype} from {entry.source}), "
                      f"not of its layer image {image}",
                      hint="unmount it, or set layer_fs=shared (docs/security.md)")


def ensure_layer_fs(root: Path, *, size: int = DEFAULT_LAYER_SIZE, parent_mode: int = 0o700,
                    ns_pid: int | None = None, server_running: bool = False,
                    fmt: FsFormat = EXT4) -> bool:
    """Mount the layer at `root` from its own image (made, formatted and filled from an
    existing plain directory when needed), here and, when the NFS server runs in another
    mount namespace (`ns_pid`, `oneroot serve` under `ip netns exec`), there too: both
    mounts are the same superblock. True when it mounted anything now.

    With `server_running`, an existing plain directory is not mounted over: the running
    server may export it, and would go on serving the old directory (or the moved copy)."""
    image = layer_image(root, fmt)
    changed = False
    if not _check_mount_point(root, image):
        tables = [read_mounts(Path(f"/proc/{ns_pid}/mountinfo"))] if ns_pid else []
        _check_plain_dir(root, image, server_running=server_running,
                         elsewhere=any(_from_image(t, root, image) for t in tables))
        if not root.parent.exists():
            root.parent.mkdir(mode=parent_mode, parents=True)
        created = _make_image(image, size, fmt)
        with held_loop_device(image, tables) as device:
            if not os.path.lexists(root):
                root.mkdir(mode=0o755)
            elif created and _has_content(root):
                kept = _migrate(root, image, device, fmt)
                log.warning("layerfs.migrated dir=%s image=%s kept=%s hint=%s", root, image,
                            kept, "delete the kept copy once the node boots from its own "
                                  "filesystem")
            mount_device(device, root, fmt)
            run_tool("losetup", "-d", device)  # busy: detached when the last mount goes
        os.chmod(root, 0o755)
        log.info("layerfs.mounted dir=%s image=%s", root, image)
        changed = True
    theirs = read_mounts(Path(f"/proc/{ns_pid}/mountinfo")) if ns_pid is not None else None
    if theirs is not None and not _from_image(theirs, root, image):
        with held_loop_device(image, [read_mounts()]) as device:
            mount_device(device, root, fmt, ns_pid)
        log.info("layerfs.mounted dir=%s image=%s ns_pid=%s", root, image, ns_pid)
        changed = True
    return changed


def release_layer_fs(root: Path) -> bool:
    """Unmount a layer's own filesystem and delete its image (the layer is archived or no
    longer wanted). False when `root` is not mounted from its image."""
    if not is_layer_fs(root):
        return False
    image = layer_image(root)
    run_tool("umount", str(root))
    image.unlink()
    log.info("layerfs.released dir=%s image=%s", root, image)
    return True


def unmount_layer_fs(root: Path, fmt: FsFormat = EXT4) -> bool:
    """Unmount a layer's own filesystem, keeping its image (tests; a server's shutdown)."""
    if not is_layer_fs(root, fmt):
        return False
    run_tool("umount", str(root))
    return True
