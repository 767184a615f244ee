"""A `union=block` node's ext4 top, opened on the server for `oneroot overlay …`: only while
the node is known to be off, and never by the server's kernel.

The node writes that file: it is hostile input. The server never mounts it as ext4. It is
opened without following links inside the node's directory, must be a regular file no
larger than the node's `block_top_size`, is checked (and its journal replayed) by
`e2fsck -p`, then served by `fuse2fs` (userspace: the kernel sees only FUSE replies, and
refuses a name with `/` in them). Both tools run under a memory and CPU limit and a deadline
(`TopLimits`), so a crafted image costs bounded work. While `fuse2fs` serves it at
`HOME/run/block-tops/NODE`, the overlay code works on it as on any node's layer.

"Known off": the node never booted, or its last stage is `off` (recorded by `oneroot power
off` from its BMC). Anything else may be a running kernel that has the file mounted.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from oneroot.errors import ConfigError, ExternalToolError
from oneroot.fsutil.nofollow import UnsafePath
from oneroot.inventory import database
from oneroot.inventory.events import EventStore
from oneroot.model.paths import Paths
from oneroot.model.resolved import ResolvedCluster
from oneroot.ops.image_block import TOP_NAME, top_file

OFF_STAGE = "off"


@dataclass(frozen=True, slots=True, kw_only=True)
class TopLimits:
    """What the userspace tools may spend on one node's image."""

    memory: int = 512 << 20  # bytes of address space (prlimit --as)
    cpu: int = 120  # CPU seconds (prlimit --cpu): fuse2fs is killed past it
    check_seconds: float = 300.0  # wall-clock deadline of e2fsck
    mount_seconds: float = 30.0  # until fuse2fs serves the mount point


def top_mount_dir(paths: Paths, node: str) -> Path:
    return paths.run_dir / "block-tops" / node


def open_top_dir(paths: Paths, node: str) -> Path:
    """Where the node's top is served while a command has it open (`opened_top`)."""
    where = top_mount_dir(paths, node)
    if not _mounted(where):
        raise ConfigError(f"node {node}'s ext4 top is not open",
                          hint="run this through `oneroot overlay`, which opens it")
    return where


def last_stage(paths: Paths, node: str) -> tuple[str, float] | None:
    """The node's last recorded stage and its time (None: it never booted)."""
    if not database.exists(paths, paths.events_db):
        return None
    events = EventStore(database.locate(paths, paths.events_db))
    try:
        status = events.status().get(node)
    finally:
        events.close()
    return None if status is None else (status.stage, status.time)


def check_known_off(paths: Paths, node: str, what: str) -> None:
    """Refuse (one error, one hint) unless the node is known to be off."""
    last = last_stage(paths, node)
    if last is None or last[0] == OFF_STAGE:
        return
    stage, when = last
    at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))
    raise ConfigError(
        f"node {node} may be running (last stage {stage!r} at {at}): its root's top is an "
        f"ext4 file its kernel has mounted, so {what} cannot read or change it now",
        hint=f"power it off first (`oneroot power off {node}` records it), then run this "
             "again; a running node's own changes are visible on the node itself")


def _open_top(cluster: ResolvedCluster, node: str) -> int:
    """The node's top.ext4, opened read-write (e2fsck replays its journal) without following
    a link, checked to be a regular file no larger than its `block_top_size`."""
    r = cluster.node(node)
    path = Path(top_file(cluster.settings, node))
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise ConfigError(f"node {node} has no directory {path.parent}",
                          hint="`oneroot nfs apply` makes it, with its ext4 top") from None
    try:
        fd = os.open(TOP_NAME, flags | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
        raise ConfigError(f"node {node} has no {path}",
                          hint="`oneroot nfs apply` makes a new, empty one") from None
    except OSError as exc:  # ELOOP: a link the node planted
        raise UnsafePath(f"{path} is not a plain file ({exc.strerror}): refused",
                         hint=f"remove it; `oneroot nfs apply` makes a new top for {node}"
                         ) from None
    finally:
        os.close(dir_fd)
    st = os.fstat(fd)
    limit = r.profile.block_top_bytes
    if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
        os.close(fd)
        kind = "larger than its block_top_size" if stat.S_ISREG(st.st_mode) else "not a file"
        raise UnsafePath(f"{path} is {kind} ({st.st_size} bytes, limit {limit}): refused",
                         hint=f"remove it; `oneroot nfs apply` makes a new top for {node}")
    return fd


def _limited(argv: list[str], limits: TopLimits) -> list[str]:
    return ["prlimit", f"--as={limits.memory}", f"--cpu={limits.cpu}", "--", *argv]


def _e2fsck(fd: int, node: str, limits: TopLimits) -> None:
    """`e2fsck -p`: replays the journal of a node that stopped without unmounting, fixes what
    is safe; anything worse (exit 4 and up) is refused."""
    argv = _limited(["e2fsck", "-p", f"/dev/fd/{fd}"], limits)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, pass_fds=(fd,),
                              timeout=limits.check_seconds)
    except subprocess.TimeoutExpired:
        raise ExternalToolError(
            f"e2fsck of node {node}'s ext4 top did not finish in {limits.check_seconds:g} s",
            hint="the file may be damaged or crafted: remove it and `oneroot nfs apply` "
                 "makes a new, empty one (the node's changes are lost)") from None
    if done.returncode >= 4:
        last = (done.stdout.strip() or done.stderr.strip()).splitlines()[-1:] or ["no output"]
        raise ExternalToolError(
            f"node {node}'s ext4 top is damaged (e2fsck exit {done.returncode}: {last[0]})",
            hint="repair it by hand with e2fsck, or remove it and `oneroot nfs apply` makes "
                 "a new, empty one (the node's changes are lost)")


def _mounted(where: Path) -> bool:
    text = Path("/proc/self/mountinfo").read_text()
    return any(line.split()[4] == str(where) for line in text.splitlines())


@contextlib.contextmanager
def opened_top(cluster: ResolvedCluster, paths: Paths, node: str, *, write: bool,
               what: str = "oneroot overlay", limits: TopLimits | None = None
               ) -> Iterator[Path]:
    """The node's top served by fuse2fs at `top_mount_dir` for the block's duration (it
    holds `upper/` and `work/`); unmounted, and fuse2fs gone, when the block ends."""
    limits = limits or TopLimits()
    check_known_off(paths, node, what)
    fd = _open_top(cluster, node)
    try:
        _e2fsck(fd, node, limits)
        where = top_mount_dir(paths, node)
        where.mkdir(parents=True, exist_ok=True, mode=0o700)
        if _mounted(where):
            raise ConfigError(f"node {node}'s top is already open at {where}",
                              hint=f"another oneroot command has it; or `umount {where}`")
        options = "rw" if write else "ro"
        argv = _limited(["fuse2fs", f"/dev/fd/{fd}", str(where), "-f", "-o",
                         f"{options},nosuid,nodev,noexec"], limits)
        proc = subprocess.Popen(argv, pass_fds=(fd,), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            _wait_mounted(proc, where, node, limits)
            yield where
        finally:
            _unmount(proc, where)
    finally:
        os.close(fd)


def reading_top(cluster: ResolvedCluster, paths: Paths,
                node: str) -> contextlib.AbstractContextManager[object]:
    """A `union=block` node's top opened read-only for a look; nothing for other nodes."""
    if cluster.node(node).profile.block_union:
        return opened_top(cluster, paths, node, write=False)
    return contextlib.nullcontext()


def _wait_mounted(proc: subprocess.Popen[str], where: Path, node: str,
                  limits: TopLimits) -> None:
    deadline = time.monotonic() + limits.mount_seconds
    while not _mounted(where):
        if proc.poll() is not None:
            err = (proc.stderr.read() if proc.stderr else "").strip().splitlines()[-1:]
            raise ExternalToolError(
                f"fuse2fs could not serve node {node}'s ext4 top: "
                f"{err[0] if err else 'exit ' + str(proc.returncode)}",
                hint="check that fuse2fs is installed and /dev/fuse exists (modprobe fuse)")
        if time.monotonic() > deadline:
            raise ExternalToolError(f"fuse2fs did not serve node {node}'s top in "
                                    f"{limits.mount_seconds:g} s")
        time.sleep(0.05)


def _unmount(proc: subprocess.Popen[str], where: Path) -> None:
    """Unmount (fuse2fs then writes what it holds and exits) and wait for it."""
    if _mounted(where):
        subprocess.run(["umount", str(where)], capture_output=True)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()
