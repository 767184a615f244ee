"""The kernel NFS server: our exports in their own file, applied with `exportfs -ra`.

oneroot writes `/etc/exports.d/oneroot.exports` (nfs-utils reads `*.exports` there besides
`/etc/exports`), so an administrator's own `/etc/exports` is never touched. The file is replaced
atomically and `exportfs -ra` runs only when its content changed (or when asked to).

Not run against a real nfsd on the development host (no nfsd there): the file handling is
tested with a stand-in `exportfs`.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from oneroot.errors import ExternalToolError
from oneroot.fsutil import write_if_changed
from oneroot.model.cluster import NfsServerKind
from oneroot.nfs.view import MountEntry

log = logging.getLogger(__name__)

EXPORTS_FILE = Path("/etc/exports.d/oneroot.exports")
PROC_FILESYSTEMS = Path("/proc/filesystems")
NFSD_CLIENTS = Path("/proc/fs/nfsd/clients")  # Linux >= 5.3: one dir per NFSv4 client
_CLIENT_INFO_LIMIT = 4096  # bytes: a client's `info` is a dozen short lines


@dataclass(frozen=True, slots=True, kw_only=True)
class KnfsdResult:
    path: Path
    changed: bool
    applied: bool


def kernel_has_nfsd(filesystems: Path = PROC_FILESYSTEMS) -> bool:
    """Whether the running kernel can serve NFS (the `nfsd` filesystem is registered)."""
    try:
        text = filesystems.read_text()
    except OSError:
        return False
    return any(line.split()[-1:] == ["nfsd"] for line in text.splitlines())


def default_nfs_server(filesystems: Path = PROC_FILESYSTEMS) -> NfsServerKind:
    """The NFS server for a cluster that names none: knfsd where the kernel can serve NFS,
    else nfs-ganesha. `oneroot init` and `oneroot doctor` both decide with this."""
    return NfsServerKind.KNFSD if kernel_has_nfsd(filesystems) else NfsServerKind.GANESHA


def apply_exports(text: str, *, path: Path = EXPORTS_FILE, exportfs: str = "exportfs",
                  force: bool = False) -> KnfsdResult:
    """Write the rendered exports to `path` and, if it changed (or `force`), `exportfs -ra`."""
    if not text.endswith("\n"):
        text += "\n"
    changed = write_if_changed(path, text.encode(), mode=0o644)
    if not changed and not force:
        return KnfsdResult(path=path, changed=False, applied=False)
    if shutil.which(exportfs) is None:
        raise ExternalToolError(f"{exportfs} not found (exports written to {path})",
                                hint="install nfs-kernel-server, or set nfs_server to ganesha")
    proc = subprocess.run([exportfs, "-ra"], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=120)
    if proc.returncode != 0:
        raise ExternalToolError(
            f"exportfs -ra failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout}",
            hint=f"check {path} and the NFS server (`systemctl status nfs-server`)")
    log.info("nfs.knfsd.applied path=%s", path)
    return KnfsdResult(path=path, changed=changed, applied=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class JunctionBind:
    """A layer dir bound at its junction inside the NFSv4 root view (docs/nfs.md)."""

    source: Path
    target: Path


def bind_junctions(binds: tuple[JunctionBind, ...]) -> int:
    """Bind each source at its target unless it is there already; returns how many were made.

    A target that holds another tree (a server-side union mounted again since) is unbound and
    bound afresh. A bind is made with MS_PRIVATE semantics left to the defaults: the target is
    a directory in the view's tmpfs upper, which no other mount shares. A source that is no
    directory (an image whose tree is gone) is left unbound, with a warning: its export is
    then the empty junction, and the other exports are still applied.
    """
    made = 0
    for bind in binds:
        if _same_tree(bind.source, bind.target):
            continue
        if _is_mountpoint(bind.target):
            _mount("umount", "-l", str(bind.target))
        if not bind.source.is_dir():
            log.warning("nfs.knfsd.bind_skipped source=%s target=%s reason=%s", bind.source,
                        bind.target, "not a directory")
            continue
        _mount("mount", "--bind", str(bind.source), str(bind.target))
        made += 1
        log.info("nfs.knfsd.bound source=%s target=%s", bind.source, bind.target)
    return made


def unbind_junctions(binds: tuple[JunctionBind, ...]) -> int:
    """Undo `bind_junctions` (a server-side union is about to be unmounted: its bind in the
    view would keep the overlayfs mount alive, and the union could not be mounted again on
    the same upper dir); returns how many were unbound. Lazily: knfsd may hold files of it
    for a moment after its unexport (the union's remount waits for the upper dir)."""
    unbound = 0
    for bind in binds:
        if _is_mountpoint(bind.target):
            _mount("umount", "-l", str(bind.target))
            unbound += 1
            log.info("nfs.knfsd.unbound target=%s", bind.target)
    return unbound


def stray_binds(mounts: list[MountEntry], binds: tuple[JunctionBind, ...], views: list[Path]
                ) -> tuple[JunctionBind, ...]:
    """The mounts strictly below one of `views` that are not (or not below) a target of
    `binds`: binds at junctions of exports gone since (a stale server-side union, an image
    version no node uses any more, a removed node). Each keeps its tree alive (a union's
    upper dir "in use", a version's directory after `image gc`); none is exported (the view
    has no `crossmnt`). Only oneroot mounts below a view."""
    wanted = [b.target for b in binds]
    return tuple(
        JunctionBind(source=Path(m.source), target=m.mount_point) for m in mounts
        if any(m.mount_point.is_relative_to(v) and m.mount_point != v for v in views)
        and not any(m.mount_point.is_relative_to(t) for t in wanted))


def expire_clients(address: ipaddress.IPv4Address, clients: Path = NFSD_CLIENTS) -> int:
    """Expire knfsd's NFSv4 clients at `address` (a node that is booting: its old client is
    dead); returns how many. knfsd 6.1 keeps a vanished client's opens and delegations
    (courteous server) until the node mounts again, and they hold the files of its
    server-side union: its boot remount would find the upper dir still in use.
    Nothing to do (0) where the kernel has no `clients` dir."""
    try:
        ids = sorted(os.listdir(clients))
    except FileNotFoundError:
        return 0
    expired = 0
    for cid in ids:
        try:
            if _client_address(clients / cid / "info") != address:
                continue
            with open(clients / cid / "ctl", "w") as ctl:  # waits for its calls to end
                ctl.write("expire\n")
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                continue  # gone meanwhile (it expired, or its node mounted again)
            raise ExternalToolError(f"cannot expire NFS client {cid} at {address}: {exc}",
                                    hint=f"see {clients / cid / 'info'}") from exc
        expired += 1
        log.info("nfs.knfsd.client_expired id=%s address=%s", cid, address)
    return expired


def _client_address(info: Path) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in a client's `info` (`address: "10.0.0.14:853"`), None if unreadable."""
    with open(info, "rb") as f:
        text = f.read(_CLIENT_INFO_LIMIT).decode("utf-8", "replace")
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "address":
            host = value.strip().strip('"').rpartition(":")[0].strip("[]")
            try:
                return ipaddress.ip_address(host)
            except ValueError:
                return None
    return None


def _same_tree(a: Path, b: Path) -> bool:
    try:
        sa, sb = a.stat(), b.stat()
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _is_mountpoint(path: Path) -> bool:
    return subprocess.run(["mountpoint", "-q", str(path)], stdin=subprocess.DEVNULL,
                          timeout=30).returncode == 0


def _mount(*argv: str) -> None:
    proc = subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60)
    if proc.returncode != 0:
        raise ExternalToolError(f"{' '.join(argv)} failed: {proc.stderr.strip()}",
                                hint="see `dmesg | tail` for the kernel's reason")
