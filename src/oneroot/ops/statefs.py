"""The state filesystem: every tree oneroot exports for writing (node layers, group layers) on
a filesystem that holds nothing else, mounted `nosuid,nodev,prjquota`.

Why: a node that forges a file handle with its export's fsid reaches the whole filesystem its
export lives on unless the server checks subtrees (the classic subtree escape). On a
filesystem of its own, that filesystem holds layers only, and the server's other files are out
of reach; the other nodes' layers are not, so with knfsd every layer export on it is
`subtree_check` too (`ops.knfsd_layout.check_subtrees`). Project quotas on it give each node's layer
a limit (`layer_quota`): a node that fills its layer gets EDQUOT, the others and serve do not.

`oneroot init --state-device DEV` formats a partition or LV the administrator names;
without it, an image file in oneroot's home is loop-mounted (the embedded default). Either is
ext4 made with `-O quota,project` (mounted `prjquota`; each node layer a project) where the
kernel has ext4 quotas (`CONFIG_QFMT_V2`), else btrfs (each node layer a subvolume with a
qgroup limit: the kernel this was built on has neither ext4 nor XFS quotas). It is mounted at
the common parent of the state and group dirs.
The choice is kept in `HOME/statefs.json`; `oneroot serve` mounts it at start when it is not
mounted, and `fstab_line()` is the line that makes it survive a reboot without oneroot.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import json
import logging
import os
import stat
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from oneroot.errors import ConfigError, ExternalToolError
from oneroot.fsutil import write_atomic
from oneroot.model.cluster import Settings
from oneroot.model.paths import Paths
from oneroot.nfs.view import filesystem_of, mount_at

log = logging.getLogger(__name__)

CONFIG = "statefs.json"
LABEL = "oneroot-state"
MOUNT_OPTIONS = {"ext4": "nosuid,nodev,prjquota", "btrfs": "nosuid,nodev"}
DEFAULT_IMAGE_SIZE = 16 << 30  # sparse: the space is taken as layers grow
# What may sit at the top of the state filesystem besides the state and group dirs.
ALLOWED_TOP = frozenset({"lost+found", ".oneroot-statefs"})

# linux/fs.h, linux/quota.h
_FS_IOC_FSGETXATTR = 0x801C581F
_FS_IOC_FSSETXATTR = 0x401C5820
_FS_XFLAG_PROJINHERIT = 0x200
_FSXATTR = struct.Struct("=IIII12x")  # xflags, extsize, nextents, projid, (cowextsize, pad)
_Q_SETQUOTA = 0x800008
_PRJQUOTA = 2
_QIF_BLIMITS = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class StateFs:
    mountpoint: Path
    device: Path | None  # a partition or LV; None: `image` is loop-mounted
    image: Path | None
    fstype: str = "ext4"  # or btrfs

    @property
    def options(self) -> str:
        return MOUNT_OPTIONS[self.fstype] + ("" if self.device else ",loop")

    @property
    def source(self) -> Path:
        assert self.device is not None or self.image is not None
        return self.device if self.device is not None else self.image  # type: ignore[return-value]

    def fstab_line(self) -> str:
        """The /etc/fstab line that mounts it at boot (`oneroot serve` also mounts it)."""
        return f"{self.source} {self.mountpoint} {self.fstype} {self.options},nofail 0 2"


def ext4_quotas_supported(config: Path = Path("/proc/config.gz")) -> bool:
    """Whether this kernel enforces ext4 project quotas (unknown config: assume so)."""
    import gzip

    try:
        text = gzip.decompress(config.read_bytes()).decode(errors="replace")
    except OSError:
        return True
    return "CONFIG_QFMT_V2=y" in text or "CONFIG_QFMT_V2=m" in text


def state_mountpoint(s: Settings) -> Path:
    """Where the state filesystem goes: the common parent of the state and group dirs."""
    common = Path(os.path.commonpath([str(s.state_dir), str(s.group_dir)]))
    if common == Path("/"):
        raise ConfigError(f"the state dir {s.state_dir} and the group dir {s.group_dir} have "
                          "no common parent but /", hint="put both under one directory, e.g. "
                          "/var/state/systems and /var/state/groups")
    return common


def load_config(paths: Paths) -> StateFs | None:
    try:
        doc = json.loads((paths.home / CONFIG).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {paths.home / CONFIG}: {exc}",
                          hint="run `oneroot init` again with the same --state-device") from None
    return StateFs(mountpoint=Path(doc["mountpoint"]),
                   device=Path(doc["device"]) if doc.get("device") else None,
                   image=Path(doc["image"]) if doc.get("image") else None,
                   fstype=doc.get("fstype", "ext4"))


def _run(*argv: str) -> str:
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=300, check=False)
    if proc.returncode != 0:
        raise ExternalToolError(f"{' '.join(argv)} failed: {proc.stderr.strip()}",
                                hint="see the message above; nothing was mounted")
    return proc.stdout


def _existing_fs(device: Path) -> tuple[str, str]:
    proc = subprocess.run(["blkid", "-o", "export", str(device)], capture_output=True,
                          text=True, timeout=30, check=False, stdin=subprocess.DEVNULL)
    fields = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return fields.get("TYPE", ""), fields.get("LABEL", "")


def _mkfs(fstype: str, target: Path) -> None:
    if fstype == "btrfs":
        _run("mkfs.btrfs", "-q", "-f", "-L", LABEL, str(target))
    else:
        _run("mkfs.ext4", "-q", "-F", "-L", LABEL, "-O", "quota,project", str(target))


def create_state_fs(s: Settings, paths: Paths, *, device: Path | None = None,
                    size: int = DEFAULT_IMAGE_SIZE, fstype: str | None = None) -> StateFs:
    """Make (or adopt) the state filesystem and mount it. A device that holds another
    filesystem is refused (never formatted over); one labelled `oneroot-state` is reused."""
    mountpoint = state_mountpoint(s)
    fstype = fstype or ("ext4" if ext4_quotas_supported() else "btrfs")
    if fstype not in MOUNT_OPTIONS:
        raise ConfigError(f"state filesystem type {fstype!r} is not ext4 or btrfs")
    fs = StateFs(mountpoint=mountpoint, device=device,
                 image=None if device else paths.home / "state.img", fstype=fstype)
    if device is not None:
        if not device.exists() or not stat.S_ISBLK(device.stat().st_mode):
            raise ConfigError(f"{device} is not a block device",
                              hint="name a partition or LV, e.g. /dev/vg0/oneroot-state")
        found, label = _existing_fs(device)
        if found and (label != LABEL or found != fstype):
            raise ConfigError(f"{device} already holds a {found} filesystem "
                              f"({label or 'no label'})",
                              hint="oneroot formats only an empty device: wipe it yourself "
                                   "(wipefs -a) if it is really free")
        if not found:
            _mkfs(fstype, device)
    else:
        assert fs.image is not None
        if not fs.image.exists():
            fs.image.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(fs.image, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.ftruncate(fd, size)
            finally:
                os.close(fd)
            _mkfs(fstype, fs.image)
    write_atomic(paths.home / CONFIG, json.dumps({
        "mountpoint": str(mountpoint), "device": str(device) if device else None,
        "image": str(fs.image) if fs.image else None, "fstype": fstype},
        indent=2).encode(), mode=0o600)
    ensure_mounted(fs)
    if fstype == "btrfs":
        _run("btrfs", "quota", "enable", str(mountpoint))
    for d in (s.state_dir, s.group_dir):
        Path(d).mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(d, 0o700)
    return fs


def ensure_mounted(fs: StateFs) -> bool:
    """Mount the state filesystem unless it is mounted; True when it mounted it now."""
    if mount_at(fs.mountpoint) is not None:
        return False
    fs.mountpoint.mkdir(mode=0o700, parents=True, exist_ok=True)
    if any(fs.mountpoint.iterdir()):
        raise ConfigError(f"{fs.mountpoint} is not empty: the state filesystem would hide what "
                          "is there", hint=f"move its content onto the state filesystem "
                                          f"(mount {fs.source} elsewhere first)")
    _run("mount", "-t", fs.fstype, "-o", fs.options, str(fs.source), str(fs.mountpoint))
    os.chmod(fs.mountpoint, 0o700)
    log.info("statefs.mounted source=%s at=%s", fs.source, fs.mountpoint)
    return True


def mount_for_serve(s: Settings, paths: Paths) -> StateFs | None:
    """At `oneroot serve` start: mount the configured state filesystem if needed."""
    fs = load_config(paths)
    if fs is not None:
        ensure_mounted(fs)
    return fs


# -- project quotas ---------------------------------------------------------------------------


def _set_project(fd: int, project: int, *, inherit: bool) -> None:
    buf = bytearray(fcntl.ioctl(fd, _FS_IOC_FSGETXATTR, bytes(_FSXATTR.size)))
    xflags, extsize, nextents, _ = _FSXATTR.unpack_from(buf)
    if inherit:
        xflags |= _FS_XFLAG_PROJINHERIT
    _FSXATTR.pack_into(buf, 0, xflags, extsize, nextents, project)
    fcntl.ioctl(fd, _FS_IOC_FSSETXATTR, bytes(buf))


def assign_project(tree: Path, project: int) -> int:
    """Put every directory and regular file of `tree` in project `project` (new entries
    inherit it). Symbolic links, devices and FIFOs are not opened. Returns the count."""
    count = 0
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    for dirpath, dirnames, filenames in os.walk(tree, followlinks=False):
        for name, is_dir in [(None, True)] + [(n, False) for n in filenames]:
            path = dirpath if name is None else os.path.join(dirpath, name)
            try:
                fd = os.open(path, flags | (os.O_DIRECTORY if is_dir else 0))
            except OSError:
                continue  # a link, or gone
            try:
                st = os.fstat(fd)
                if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
                    _set_project(fd, project, inherit=stat.S_ISDIR(st.st_mode))
                    count += 1
            finally:
                os.close(fd)
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
    return count


def set_project_limit(device: str, project: int, limit: int | None) -> None:
    """The block hard limit of `project` on the filesystem of block device `device`
    (None: no limit), through quotactl(2)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    kib = 0 if limit is None else max(1, limit // 1024)
    dqblk = struct.pack("=QQQQQQQQI4x", kib, kib, 0, 0, 0, 0, 0, 0, _QIF_BLIMITS)
    buf = ctypes.create_string_buffer(dqblk, len(dqblk))
    cmd = (_Q_SETQUOTA << 8) | _PRJQUOTA
    if libc.quotactl(cmd, device.encode(), project, buf) != 0:
        err = ctypes.get_errno()
        raise ExternalToolError(f"cannot set the quota of project {project} on {device}: "
                                f"{os.strerror(err)}",
                                hint="the state filesystem needs project quotas "
                                     "(`oneroot init` makes it with -O quota,project)")


def make_layer_root(root: Path) -> bool:
    """On a btrfs state filesystem, create a node's layer directory as a subvolume (its
    qgroup carries the node's limit). False when it exists or is left to `ensure_layer`."""
    if os.path.lexists(root) or not root.parent.is_dir():
        return False
    parent = filesystem_of(root.parent)
    if parent is None or parent.fstype != "btrfs" or not parent.source.startswith("/dev/"):
        return False
    _run("btrfs", "-q", "subvolume", "create", str(root))
    os.chmod(root, 0o755)
    return True


def apply_layer_quota(node_dir: Path, limit: int | None) -> str:
    """Give a node's layer its limit (None: none). Returns how: `project N` (ext4),
    `qgroup` (btrfs), or `none` when its filesystem cannot enforce one (not the state
    filesystem; doctor says so)."""
    entry = filesystem_of(node_dir)
    if entry is None:
        return "none"
    if entry.fstype == "btrfs":
        if os.stat(node_dir).st_ino != 256:  # not a subvolume: its qgroup is the parent's
            return "none"
        _run("btrfs", "qgroup", "limit", "none" if limit is None else str(limit), str(node_dir))
        log.info("statefs.quota dir=%s qgroup limit=%s", node_dir, limit)
        return "qgroup"
    if "prjquota" not in entry.options.split(",") or not entry.source.startswith("/dev/"):
        return "none"
    project = os.stat(node_dir).st_ino  # unique on its filesystem, stable while it exists
    assign_project(node_dir, project)
    set_project_limit(entry.source, project, limit)
    log.info("statefs.quota dir=%s project=%d limit=%s", node_dir, project, limit)
    return f"project {project}"
