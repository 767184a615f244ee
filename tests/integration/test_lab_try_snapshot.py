"""The snapshot of a live upper a `lab try` canary of a `union=server` node reads
(`overlay.snapshot`), on real filesystems: a reflink copy on XFS (its blocks shared: the
filesystem barely grows), a bounded plain copy on tmpfs (refused past the limit before a byte
is copied), and a layer that keeps changing while it is copied refused after its tries, with
nothing left behind. Needs root (loop and tmpfs mounts)."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from oneroot.fsutil import UnsafePath
from oneroot.overlay.snapshot import SnapshotRefused, snapshot_tree

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts)"),
]

MIB = 1 << 20


def _mounted(kind: str, where: Path) -> Iterator[Path]:
    where.mkdir()
    if kind == "xfs":
        image = where.with_suffix(".img")
        subprocess.run(["truncate", "-s", "512M", str(image)], check=True)
        subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(where)], check=True)
    else:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256M", "tmpfs", str(where)],
                       check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


@pytest.fixture
def xfs(tmp_path: Path) -> Iterator[Path]:
    yield from _mounted("xfs", tmp_path / "xfs")


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    yield from _mounted("tmpfs", tmp_path / "tmpfs")


def _upper(root: Path, *, big: int = 0) -> Path:
    """An upper as a server-side union leaves it: files, a `c 0 0` whiteout, an opaque
    directory, a link pointing out of the tree (never followed)."""
    upper = root / "node01" / "upper"
    (upper / "etc").mkdir(parents=True)
    (upper / "etc" / "hostname").write_text("node01\n")
    os.mknod(upper / "etc" / "issue.net", 0o600 | stat.S_IFCHR, os.makedev(0, 0))
    (upper / "opt").mkdir()
    os.setxattr(upper / "opt", "trusted.overlay.opaque", b"y")
    (upper / "escape").symlink_to("/etc")
    if big:
        (upper / "big").write_bytes(os.urandom(big))
    return upper


def _used(fs: Path) -> int:
    os.sync()
    st = os.statvfs(fs)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def _check_copy(upper: Path, snap: Path) -> None:
    copy = snap / "upper"
    assert (copy / "etc" / "hostname").read_text() == "node01\n"
    st = os.lstat(copy / "etc" / "issue.net")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(copy / "opt", "trusted.overlay.opaque") == b"y"
    assert os.readlink(copy / "escape") == "/etc" and not (copy / "passwd").exists()
    assert (snap / "work").is_dir() and not list((snap / "work").iterdir())
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in upper.iterdir())


def test_a_reflink_snapshot_on_xfs_shares_the_blocks(xfs: Path) -> None:
    upper = _upper(xfs, big=64 * MIB)
    (xfs / "try-node01").mkdir()
    before = _used(xfs)
    snap = snapshot_tree(upper, xfs / "try-node01" / "snapshot", limit=MIB)  # for copies
    assert snap.method == "reflink" and snap.tries == 1 and snap.bytes >= 64 * MIB
    assert _used(xfs) - before < 8 * MIB  # metadata, not the 64 MiB file again
    _check_copy(upper, snap.path)
    assert (snap.path / "upper" / "big").read_bytes() == (upper / "big").read_bytes()


def test_a_copy_where_there_is_no_reflink_is_bounded(tmpfs: Path) -> None:
    upper = _upper(tmpfs, big=8 * MIB)
    (tmpfs / "try-node01").mkdir()
    dest = tmpfs / "try-node01" / "snapshot"
    with pytest.raises(SnapshotRefused) as info:
        snapshot_tree(upper, dest, limit=4 * MIB)
    assert "over the 4 MiB" in str(info.value) and info.value.hint
    assert not dest.exists()  # refused before a byte was copied, nothing left
    snap = snapshot_tree(upper, dest, limit=16 * MIB)
    assert snap.method == "copy" and snap.bytes >= 8 * MIB
    _check_copy(upper, snap.path)


def test_a_layer_that_keeps_changing_is_refused(tmpfs: Path) -> None:
    upper = _upper(tmpfs)
    (tmpfs / "try-node01").mkdir()
    dest = tmpfs / "try-node01" / "snapshot"
    stop = threading.Event()

    def write() -> None:  # a busy node: its log grows all the time
        with (upper / "log").open("ab", buffering=0) as log:
            while not stop.is_set():
                log.write(b"x")

    writer = threading.Thread(target=write)
    writer.start()
    try:
        with pytest.raises(SnapshotRefused) as info:
            snapshot_tree(upper, dest, tries=3)
    finally:
        stop.set()
        writer.join()
    assert "kept changing while it was copied (3 tries" in str(info.value)
    assert not dest.exists()
    assert snapshot_tree(upper, dest).tries == 1  # quiet again: taken at once


def test_a_linked_upper_is_refused(tmpfs: Path) -> None:
    """The node's directory is written by the node in client mode: an `upper` it turned into
    a link to the server's files is not followed."""
    (tmpfs / "node01").mkdir()
    (tmpfs / "node01" / "upper").symlink_to("/etc")
    (tmpfs / "try-node01").mkdir()
    with pytest.raises(UnsafePath):
        snapshot_tree(tmpfs / "node01" / "upper", tmpfs / "try-node01" / "snapshot")
    assert not (tmpfs / "try-node01" / "snapshot").exists()
