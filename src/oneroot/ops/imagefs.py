"""oneroot's images on a filesystem of their own (`layer_fs=own` with nfs-ganesha): `HOME/images`
is the mount point of one sparse XFS image, `HOME/.layer-images/images.xfs`, loop-mounted
`nosuid,nodev` the way node layers are (`ops.layerfs`: one loop device for every namespace).

Why: an image that is not the server's `/` is exported as it is, and nfs-ganesha's FSAL_VFS
opens any handle whose filesystem is the export's (docs/security.md, "Forged file handles"):
an image directory on the server's `/` gave every node that boots it the whole of `/`
(`/etc/shadow`). One filesystem for all of `HOME/images`, not one per version: versions are
hardlink farms of each other (`ops.image_build`), and a hard link cannot cross filesystems.
What a forged handle still reaches is what that filesystem holds: the images and their
versions, all exported read-only to the nodes anyway.

Why XFS, not ext4 like the layers (measured, docs/image-versions.md): it grows online with
`xfs_growfs` (CAP_SYS_ADMIN), where ext4's online `resize2fs` also needs CAP_SYS_RESOURCE,
which containers often drop (this CI host does); same setup time, a 64 MiB log against
ext4's 16 MiB of metadata for a sparse 1 TiB image, the same cost for a version (`cp -al`),
and reflinks for later. `grow_images_fs` doubles it when less than `GROW_BELOW` is free
(`oneroot nfs apply` / `oneroot serve` start check it).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from oneroot.errors import ConfigError, ExternalToolError
from oneroot.model.cluster import Settings
from oneroot.model.paths import Paths
from oneroot.nfs.view import mount_at, read_mounts
from oneroot.ops.layerfs import (
    FsFormat,
    backing_file,
    ensure_layer_fs,
    is_layer_fs,
    layer_image,
    run_tool,
)

log = logging.getLogger(__name__)

IMAGES_FS_SIZE = 1 << 40  # sparse: the images take what they hold
GROW_BELOW = 0.2  # grow (double) when less than this share of the filesystem is free
XFS = FsFormat(fstype="xfs", options="nosuid,nodev",
               mkfs=("mkfs.xfs", "-q", "-f", "-m", "reflink=1", "-l", "size=64m"))


def images_root(paths: Paths) -> Path:
    return paths.home / "images"


def images_image(paths: Paths) -> Path:
    """The file `HOME/images` is mounted from."""
    return layer_image(images_root(paths), XFS)


def is_images_fs(paths: Paths) -> bool:
    return is_layer_fs(images_root(paths), XFS)


def images_fs_wanted(s: Settings) -> bool:
    """Images get a filesystem of their own where layers do (FSAL_VFS, layer_fs=own)."""
    return s.layer_fs.applies(s.nfs_server)


def ensure_images_fs(paths: Paths, s: Settings, *, ns_pid: int | None = None,
                     server_running: bool = False, size: int = IMAGES_FS_SIZE) -> bool:
    """Mount `HOME/images` from its own image (made on first use; an existing plain
    `HOME/images` is copied in with its hard links, the old tree kept beside the image), here
    and in the NFS server's mount namespace. Nothing to do before any image lives there.
    True when it mounted anything now."""
    root = images_root(paths)
    made = os.path.lexists(images_image(paths))
    # Once made, the images live there whatever the settings say now (layer_fs=shared or
    # knfsd later): after a reboot the NFS server must never export the bare mount point.
    if not (made or (images_fs_wanted(s) and root.exists())):
        return False
    if server_running and not made:
        # Moving HOME/images now would leave the running server on the old tree: at the next
        # start (`oneroot doctor` reports the images as exported from a shared fs meanwhile).
        log.warning("imagefs.deferred dir=%s hint=%s", root,
                    "restart `oneroot serve`: it moves the images before the NFS server starts")
        return False
    changed = ensure_layer_fs(root, size=size, parent_mode=0o755, ns_pid=ns_pid,
                              server_running=server_running, fmt=XFS)
    grow_images_fs(paths)
    return changed


def images_fs_problem(paths: Paths, *, ns_pid: int | None = None) -> str | None:
    """Why `HOME/images` must not be exported now, or None. Once its filesystem is made, the
    directory is only that filesystem's mount point: unmounted (by hand, while serve runs), the
    NFS server would export the bare directory, empty, or holding what was written there
    meanwhile. Looked up in the NFS server's mount namespace (`ns_pid`), else ours."""
    image = images_image(paths)
    if not os.path.lexists(image):
        return None  # no filesystem of its own: HOME/images is the images
    root = images_root(paths)
    table = read_mounts(Path(f"/proc/{ns_pid}/mountinfo")) if ns_pid is not None else None
    entry = mount_at(root, table)
    if entry is None:
        return (f"{root} is not mounted: the images are on its own filesystem {image}, and "
                "the bare mount point would be exported")
    if backing_file(entry.source) != Path(os.path.realpath(image)):
        return (f"{root} is mounted from {entry.source} ({entry.fstype}), not from its own "
                f"filesystem {image}")
    return None


def require_images_fs(paths: Paths, *, ns_pid: int | None = None) -> None:
    """Refuse (`ConfigError`, logged) to export while `images_fs_problem` has something to say:
    before the exports are applied, and before the supervisor starts ganesha again."""
    problem = images_fs_problem(paths, ns_pid=ns_pid)
    if problem is None:
        return
    log.error("imagefs.not_mounted problem=%s", problem)
    raise ConfigError(f"{problem}: not exporting it",
                      hint="mount it again: `oneroot nfs apply` does while ganesha is down "
                           "(serve starts it once it is mounted), or restart `oneroot serve`")


def mount_images_fs_if_made(paths: Paths) -> None:
    """Before writing under `HOME/images` (image create, import, exec, gc): mount its own
    filesystem when it exists and is not mounted (after a reboot, before `oneroot serve`), so
    that nothing lands on the bare mount point."""
    mount_if_images_dir(images_root(paths))


def mount_if_images_dir(directory: Path) -> None:
    """`mount_images_fs_if_made` for a directory that may be `HOME/images` (where `image
    create` puts an image: it knows the directory, not HOME)."""
    if os.path.lexists(layer_image(directory, XFS)) and not is_layer_fs(directory, XFS):
        ensure_layer_fs(directory, parent_mode=0o755, fmt=XFS)


def grow_images_fs(paths: Paths, *, below: float = GROW_BELOW) -> int | None:
    """Double the images filesystem online (image file, loop device, `xfs_growfs`) when less
    than `below` of it is free; the new size in bytes, or None when nothing was done."""
    root = images_root(paths)
    if not is_images_fs(paths):
        return None
    st = os.statvfs(root)
    if st.f_bavail >= below * st.f_blocks:
        return None
    image = images_image(paths)
    size = image.stat().st_size * 2
    try:
        os.truncate(image, size)
    except OSError as exc:
        raise ExternalToolError(f"cannot grow the images filesystem {image}: {exc.strerror}",
                                hint="free space on the filesystem that holds it") from exc
    entry = mount_at(root)
    assert entry is not None  # is_images_fs
    run_tool("losetup", "-c", entry.source)
    run_tool("xfs_growfs", str(root), timeout=3600)
    log.warning("imagefs.grown image=%s size=%d", image, size)
    return size


def _settle_free_space(root: Path, *, deadline: float = 60.0) -> None:
    """Wait until the blocks of what was just removed are free. XFS frees an unlinked file's
    blocks in a background worker (inode inactivation) after `unlink` returns, and `fstrim`
    discards only extents that are free and whose freeing is on disk: run before the worker,
    it gives nothing back (CI saw 0 of 96 MiB). `statfs` makes XFS run the queued work now
    (`xfs_inodegc_push`); the count is settled when it has not moved for a second. `fstrim`
    forces the log itself, so the freed extents are no longer busy by then."""
    start = time.monotonic()
    last, same = -1, 0
    while time.monotonic() - start < deadline and same < 5:
        free = os.statvfs(root).f_bfree
        same = same + 1 if free == last else 0
        last = free
        time.sleep(0.2)


def trim_images_fs(paths: Paths) -> bool:
    """Give the blocks of removed versions back to the filesystem that holds the image file
    (`fstrim`: XFS discards them to the loop device, which punches holes in the sparse file;
    without it the file keeps every block it ever held). Best effort: False when not done."""
    if not is_images_fs(paths):
        return False
    try:
        _settle_free_space(images_root(paths))
        run_tool("fstrim", str(images_root(paths)), timeout=600)
    except ExternalToolError as exc:  # no discard on this loop device: space stays taken
        log.warning("imagefs.trim_failed dir=%s reason=%s", images_root(paths), exc)
        return False
    return True
