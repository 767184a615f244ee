"""The server-side union of one node (DESIGN §3): its layers merged by overlayfs on the server,
exported rw to that node alone, so the node mounts one plain NFS root.

    overlay  lowerdir=<group layers, topmost first>:<image root>,
             upperdir=<state>/<node>/upper, workdir=<state>/<node>/work,
             index=on, nfs_export=on, xino=on          mounted at <state>/<node>/merged

Why each option: `index=on,nfs_export=on` make the merged tree's file handles decodable (an
NFS server needs that, and handles survive a remount of the same layers); `xino=on` keeps
inode numbers unique when layers are on different filesystems (without it ganesha answers
NFS4ERR_XDEV); it costs nothing when they share one.

`index=on` records the topmost lower layer's root in the upper dir (`trusted.overlay.origin`)
and refuses a later mount over different layers. So the layer list of the last mount is kept
in `<state>/<node>/.union-layers`; when the layers change (the node joined a group), the
origin and the index are cleared before the next mount.

Mounts happen in the mount namespace of the NFS server that exports them: `ns_pid` names a
process in it (`nsenter -t PID -m`), None for our own. `oneroot serve` under `ip netns exec`
has a private mount namespace, and a union the CLI mounted in its own would be invisible to
the ganesha `oneroot serve` runs.

A node writes its own directory in client mode (it is exported rw with `no_root_squash`), so
before a switch to `union=server` it may have planted `merged`, `work`, `work/index` or
`.union-layers*` as links to the server's own directories. Nothing here takes a path below the
node's directory on trust: `upper`, `work` and `merged` are opened with `O_NOFOLLOW` from the
node directory's descriptor (a link, file or device standing there is replaced by a fresh
directory: oneroot owns them), and the mount is handed those descriptors
(`/proc/self/fd/N`), never the paths again; the record is written and read through the same
descriptor, and the origin reset walks `upper` and `work/index` with `oneroot.fsutil`.
The mounted union is known by its source, `oneroot-union-<node>` (its options show the
descriptors' names, not the paths).

Errors: `UnionUnsupported` (a `ConfigError`: the image is the server's live `/`, or holds the
state dir), `ExternalToolError` (mount/umount failed; the kernel's reason is in dmesg),
`UnsafePath` (a tree too deep to reset).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from oneroot.errors import ConfigError, ExternalToolError
from oneroot.fsutil import (
    DirAttrs,
    UnsafePath,
    atomic_file,
    empty_dir,
    ensure_fresh_dir,
    lstat_at,
    open_dir,
    open_dir_fd,
    read_bounded,
    walk,
)
from oneroot.nfs.view import MountEntry, read_mounts

log = logging.getLogger(__name__)

UNION_OPTIONS = "index=on,nfs_export=on,xino=on"
_RECORD_LIMIT = 64 << 10  # bytes: the layer list of the last mount
MERGED_DIR = "merged"
LAYERS_RECORD = ".union-layers"
_ORIGIN_XATTR = "trusted.overlay.origin"
# seconds a mount waits for an upper dir still held by an unmounted union's copy elsewhere
BUSY_TIMEOUT = 30.0


class UnionUnsupported(ConfigError):
    """This node's layers cannot be unioned on the server."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UnionSpec:
    """One node's server-side union. `lowers` is topmost first, as overlayfs reads it."""

    node: str
    lowers: tuple[Path, ...]
    upper: Path
    work: Path
    mountpoint: Path

    @property
    def node_dir(self) -> Path:
        return self.upper.parent

    @property
    def options(self) -> str:
        lower = ":".join(str(p) for p in self.lowers)
        return f"lowerdir={lower},upperdir={self.upper},workdir={self.work},{UNION_OPTIONS}"

    def mount_options(self, fds: UnionFds) -> str:
        """`options` with the checked descriptors in place of the upper and work paths."""
        lower = ":".join(str(p) for p in self.lowers)
        return (f"lowerdir={lower},upperdir=/proc/self/fd/{fds.upper},"
                f"workdir=/proc/self/fd/{fds.work},{UNION_OPTIONS}")

    @property
    def source(self) -> str:
        return union_source(self.node)

    def check(self) -> None:
        if not self.lowers:
            raise ConfigError(f"node {self.node}'s union has no lower layer")
        for path in (*self.lowers, self.upper, self.work, self.mountpoint):
            if not path.is_absolute() or any(c in str(path) for c in ",:\\\n"):
                raise ConfigError(f"union path {path} must be absolute, without , : or \\",
                                  hint="overlayfs cannot take such a path in its options")
        if Path("/") in self.lowers:
            raise UnionUnsupported(
                f"node {self.node}'s image is the server's live `/`: a server-side union over "
                "it is undefined (overlayfs forbids changing a lower layer under a mounted "
                "union, and `/` changes all the time)",
                hint="use an image directory (`oneroot image create NAME`) for server-side "
                     "union nodes, or set union=client")
        if self.upper.parent != self.work.parent or self.mountpoint.parent != self.upper.parent:
            raise ConfigError(f"node {self.node}'s upper, work and merged dirs must share "
                              f"one parent ({self.upper.parent})")


def union_source(node: str) -> str:
    """The source name a node's union is mounted with: how mountinfo tells it apart."""
    return f"oneroot-union-{node}"


def union_spec(node: str, *, lowers: Iterable[Path], node_dir: Path) -> UnionSpec:
    spec = UnionSpec(node=node, lowers=tuple(lowers), upper=node_dir / "upper",
                     work=node_dir / "work", mountpoint=node_dir / MERGED_DIR)
    spec.check()
    return spec


# -- mount namespaces --------------------------------------------------------------------


def same_mount_ns(pid: int) -> bool:
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino == os.stat("/proc/self/ns/mnt").st_ino
    except OSError:
        return True


def ns_mounts(ns_pid: int | None) -> list[MountEntry]:
    if ns_pid is None:
        return read_mounts()
    return read_mounts(Path(f"/proc/{ns_pid}/mountinfo"))


def _run(argv: list[str], ns_pid: int | None,
         pass_fds: tuple[int, ...] = ()) -> subprocess.CompletedProcess[str]:
    if ns_pid is not None:
        argv = ["nsenter", "-t", str(ns_pid), "-m", "--", *argv]
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60, pass_fds=pass_fds)


def union_at(spec: UnionSpec, mounts: list[MountEntry]) -> MountEntry | None:
    found = [m for m in mounts if m.mount_point == spec.mountpoint]
    return found[-1] if found else None


def _is_ours(entry: MountEntry, spec: UnionSpec) -> bool:
    return entry.fstype == "overlay" and (
        entry.source == spec.source or f"upperdir={spec.upper}" in entry.options.split(","))


def mounted_lowers(entry: MountEntry) -> tuple[Path, ...]:
    for option in entry.options.split(","):
        if option.startswith("lowerdir="):
            return tuple(Path(p) for p in option.removeprefix("lowerdir=").split(":"))
    return ()


# -- the node's directory, through descriptors ---------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class UnionFds:
    """Checked descriptors of a node's directory and its `upper`, `work` and `merged`."""

    node_dir: int
    upper: int
    work: int
    merged: int


@contextlib.contextmanager
def union_fds(spec: UnionSpec, *, ns_pid: int | None = None) -> Iterator[UnionFds]:
    """Open the node's `upper`, `work` and `merged` without following links, as seen from the
    mount namespace the union goes into (`/proc/PID/root`). Each is an entry oneroot owns: a
    link, file or device the node put in its place is removed (not followed) and a fresh
    directory made."""
    root = Path(f"/proc/{ns_pid}/root") if ns_pid is not None else Path("/")
    opened: list[int] = []
    try:
        with open_dir(root / spec.node_dir.relative_to("/")) as node_fd:
            for name, mode in (("upper", 0o755), ("work", 0o700), (MERGED_DIR, 0o755)):
                opened.append(ensure_fresh_dir(node_fd, name, DirAttrs(mode=mode),
                                               shown=str(spec.node_dir / name)))
            yield UnionFds(node_dir=node_fd, upper=opened[0], work=opened[1],
                           merged=opened[2])
    finally:
        for fd in opened:
            os.close(fd)


# -- layer changes ------------------------------------------------------------------------


def _record_text(spec: UnionSpec) -> str:
    return "".join(f"{p}\n" for p in spec.lowers)


def _remove_origin(pfd: int, name: str) -> None:
    # The parent is a checked descriptor; the last component is not followed.
    with contextlib.suppress(OSError):
        os.removexattr(f"/proc/self/fd/{pfd}/{name}", _ORIGIN_XATTR, follow_symlinks=False)


def _reset_origin(fds: UnionFds) -> None:
    """Forget the layers `index=on` verified: every origin in the upper dir and the index.

    Not only the root: overlayfs records an origin on each merged directory it looks up, and
    one that no longer verifies hides that directory's lower entries ("failed to verify
    origin"). Without an origin a file is a plain upper file; nothing of the node's is lost.
    Walked without following links; a `work/index` that is not a directory (a link the node
    planted) is removed, not followed.
    """
    with contextlib.suppress(OSError):
        os.removexattr(fds.upper, _ORIGIN_XATTR)
    for parts, _st, pfd in walk(fds.upper):
        _remove_origin(pfd, parts[-1])
    st = lstat_at(fds.work, "index")
    if st is None:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink("index", dir_fd=fds.work)
        return
    index = open_dir_fd(fds.work, ("index",))
    try:
        empty_dir(index)
    finally:
        os.close(index)


def forget_upper_fs(node: str, node_dir: Path) -> None:
    """After the node's `upper` and `work` moved to another filesystem (`ops.layerfs`
    migrating a layer into its own): overlayfs's records name the old one (the index dir's
    `trusted.overlay.upper` is the old upper's handle, and a mount fails to verify it). Drop
    them: the origins, the index and the layer record, as for a change of layers."""
    spec = UnionSpec(node=node, lowers=(), upper=node_dir / "upper", work=node_dir / "work",
                     mountpoint=node_dir / MERGED_DIR)
    with union_fds(spec) as fds:
        _reset_origin(fds)
        with contextlib.suppress(FileNotFoundError):
            os.rmdir("index", dir_fd=fds.work)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(LAYERS_RECORD, dir_fd=fds.node_dir)
    log.info("nfs.union.upper_moved node=%s dir=%s", node, node_dir)


def _layers_changed(spec: UnionSpec, fds: UnionFds) -> bool:
    try:
        recorded = read_bounded(fds.node_dir, LAYERS_RECORD, limit=_RECORD_LIMIT).data
    except FileNotFoundError:
        try:
            os.getxattr(fds.upper, _ORIGIN_XATTR)
        except OSError:
            return False  # never mounted with index=on: nothing recorded to disagree
        return True
    except UnsafePath:
        return True  # not the record oneroot wrote: start over
    return recorded != _record_text(spec).encode()


def _write_record(spec: UnionSpec, fds: UnionFds) -> None:
    with atomic_file(fds.node_dir, LAYERS_RECORD, mode=0o644) as f:
        f.write(_record_text(spec).encode())


# -- mount / unmount -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class UnionStatus:
    spec: UnionSpec
    mounted: bool
    changed: bool  # this call mounted it
    stale: bool = False  # mounted over other layers than the spec's (remount to update)


def union_status(spec: UnionSpec, *, ns_pid: int | None = None) -> UnionStatus:
    entry = union_at(spec, ns_mounts(ns_pid))
    if entry is None or not _is_ours(entry, spec):
        return UnionStatus(spec=spec, mounted=False, changed=False)
    return UnionStatus(spec=spec, mounted=True, changed=False,
                       stale=mounted_lowers(entry) != spec.lowers)


def mount_union(spec: UnionSpec, *, ns_pid: int | None = None) -> UnionStatus:
    """Mount the node's union unless it is mounted. Idempotent; a union mounted over other
    layers is left as it is (`stale`): `remount_union` replaces it."""
    spec.check()
    status = union_status(spec, ns_pid=ns_pid)
    if status.mounted:
        return status
    entry = union_at(spec, ns_mounts(ns_pid))
    if entry is not None:
        raise ExternalToolError(f"{spec.mountpoint} has a {entry.fstype} mounted that is not "
                                f"node {spec.node}'s union", hint=f"umount {spec.mountpoint}")
    for lower in spec.lowers:
        if not lower.is_dir():
            raise ConfigError(f"node {spec.node}'s layer {lower} is not a directory",
                              hint="`oneroot nfs apply` creates group layers; check the image")
    with union_fds(spec, ns_pid=ns_pid) as fds:
        if _layers_changed(spec, fds):
            log.info("nfs.union.layers_changed node=%s lowers=%s", spec.node,
                     ":".join(map(str, spec.lowers)))
            _reset_origin(fds)
        done = _mount_overlay(spec, fds, ns_pid)
        if done.returncode == 0:
            _write_record(spec, fds)
    if done.returncode != 0:
        again = union_status(spec, ns_pid=ns_pid)
        if again.mounted:  # another oneroot process mounted it meanwhile
            return again
        raise ExternalToolError(
            f"cannot mount node {spec.node}'s union at {spec.mountpoint}: "
            f"{done.stderr.strip()}", hint=_mount_hint(spec, done.stderr, ns_pid))
    log.info("nfs.union.mounted node=%s at=%s layers=%d", spec.node, spec.mountpoint,
             len(spec.lowers))
    return UnionStatus(spec=spec, mounted=True, changed=True)


def _mount_hint(spec: UnionSpec, stderr: str, ns_pid: int | None) -> str:
    holders = union_holders(spec, ns_pid=ns_pid) if "busy" in stderr else []
    if holders:
        return (f"its last mount lives on in the mount namespace of process "
                f"{', '.join(holders)}, made while the union was mounted (`unshare -m`, `ip "
                "netns exec`, a service with mounts of its own, on a host whose / is not "
                "shared): it keeps the upper dir in use until it exits; end it, then `oneroot "
                "nfs apply`")
    return ("see `dmesg | tail` for overlayfs's reason (a layer on an overlayfs, or an upper "
            "dir still used by another mount)")


def union_holders(spec: UnionSpec, *, ns_pid: int | None = None, limit: int = 3) -> list[str]:
    """The processes (`PID (COMM)`, one per mount namespace, at most `limit`) of other mount
    namespaces whose mount table still has the node's union: a copy made while it was
    mounted keeps its upper dir in use, after our unmount, until that process exits."""
    seen = {_ns_inode(str(ns_pid) if ns_pid is not None else "self")}
    found: list[str] = []
    for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
        ns = _ns_inode(pid)
        if ns in seen:
            continue
        seen.add(ns)
        try:
            mounts = read_mounts(Path(f"/proc/{pid}/mountinfo"))
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:  # gone meanwhile
            continue
        if any(m.mount_point == spec.mountpoint and m.source == spec.source for m in mounts):
            found.append(f"{pid} ({comm})")
            if len(found) == limit:
                break
    return found


def _ns_inode(pid: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino
    except OSError:
        return None


def _mount_overlay(spec: UnionSpec, fds: UnionFds, ns_pid: int | None, *,
                   busy_timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """`mount -t overlay`, again while the upper dir is still in use: a union just unmounted
    lives on while a process that copied it into a mount namespace of its own (`unshare -m`,
    `ip netns exec`) runs, and overlayfs refuses a second mount of the same upper (EBUSY).
    Up to `busy_timeout` (`BUSY_TIMEOUT`) seconds."""
    timeout = BUSY_TIMEOUT if busy_timeout is None else busy_timeout
    deadline = time.monotonic() + timeout
    retried = False
    while True:
        done = _run(["mount", "-t", "overlay", "-o", spec.mount_options(fds), spec.source,
                     f"/proc/self/fd/{fds.merged}"], ns_pid,
                    pass_fds=(fds.upper, fds.work, fds.merged))
        if (done.returncode == 0 or "busy" not in done.stderr or time.monotonic() > deadline
                or union_at(spec, ns_mounts(ns_pid)) is not None):  # mounted by another
            return done
        if not retried:
            log.info("nfs.union.upper_in_use node=%s retrying=%.0fs holders=%s (a copy of "
                     "the last mount in another mount namespace)", spec.node, timeout,
                     ",".join(union_holders(spec, ns_pid=ns_pid)) or "none found")
            retried = True
        time.sleep(0.2)


def unmount_union(spec: UnionSpec, *, ns_pid: int | None = None, timeout: float = 10.0) -> bool:
    """Unmount the node's union (the NFS server must have let go of it: unexport first).
    Retries while the mount is busy. False when nothing was mounted."""
    if not union_status(spec, ns_pid=ns_pid).mounted:
        return False
    deadline = time.monotonic() + timeout
    while True:
        done = _run(["umount", str(spec.mountpoint)], ns_pid)
        if done.returncode == 0 or not union_status(spec, ns_pid=ns_pid).mounted:
            log.info("nfs.union.unmounted node=%s at=%s", spec.node, spec.mountpoint)
            return True
        if time.monotonic() > deadline:
            raise ExternalToolError(
                f"cannot unmount node {spec.node}'s union at {spec.mountpoint}: "
                f"{done.stderr.strip() or os.strerror(errno.EBUSY)}",
                hint="the NFS server still holds it: is it still exported? "
                     f"(`fuser -vm {spec.mountpoint}`)")
        time.sleep(0.2)


def remount_union(spec: UnionSpec, *, ns_pid: int | None = None) -> UnionStatus:
    """Unmount and mount again, so the union sees the lower layers as they are now
    (overlayfs caches lower dentries) and the spec's layer list. Unexport first."""
    unmount_union(spec, ns_pid=ns_pid)
    return mount_union(spec, ns_pid=ns_pid)


def mounted_unions(state_dir: Path, *, ns_pid: int | None = None) -> dict[str, MountEntry]:
    """Every server-side union mounted under `state_dir`, by node name."""
    found: dict[str, MountEntry] = {}
    for entry in ns_mounts(ns_pid):
        mp = entry.mount_point
        if (entry.fstype == "overlay" and mp.name == MERGED_DIR
                and mp.parent.parent == state_dir
                and (entry.source == union_source(mp.parent.name)
                     or f"upperdir={mp.parent / 'upper'}" in entry.options.split(","))):
            found[mp.parent.name] = entry
    return found
