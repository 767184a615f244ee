"""Layers on filesystems of their own (`oneroot.ops.layerfs`, `layer_fs=own`): made and
mounted, mounted again after an unmount (a reboot), a plain layer moved in with its owners,
whiteouts and xattrs, the NFS server's mount namespace given the same superblock, and a
foreign mount refused. The attack they stop is in test_nfs_ganesha_handles.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from oneroot.errors import ConfigError
from oneroot.ops.layerfs import (
    EXT4,
    SYS_FS,
    ensure_layer_fs,
    held_loop_device,
    is_layer_fs,
    layer_image,
    mount_device,
    release_layer_fs,
    unmount_layer_fs,
)
from oneroot.testing.wait import until

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loop mounts)")]


@pytest.fixture
def systems() -> Iterator[Path]:
    base = Path("/var/tmp") / f"oneroot-layerfs-{os.getpid()}"  # xattrs (trusted.*)
    (base / "systems").mkdir(parents=True)
    try:
        yield base / "systems"
    finally:
        for entry in (base / "systems").iterdir():
            with contextlib.suppress(Exception):
                subprocess.run(["umount", str(entry)], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)


def _allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def test_a_layer_is_its_own_filesystem_and_is_mounted_again(systems: Path) -> None:
    root = systems / "node01"
    assert ensure_layer_fs(root, size=1 << 30)
    assert is_layer_fs(root) and os.stat(root).st_dev != os.stat(systems).st_dev
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o755
    assert _allocated(layer_image(root)) < 16 << 20  # sparse
    (root / "upper").mkdir()
    (root / "upper/kept").write_text("kept\n")
    assert not ensure_layer_fs(root)  # idempotent
    assert unmount_layer_fs(root) and not (root / "upper").exists()  # a reboot
    assert ensure_layer_fs(root)
    assert (root / "upper/kept").read_text() == "kept\n"
    assert release_layer_fs(root)
    assert not is_layer_fs(root) and not layer_image(root).exists()


def test_a_copy_of_the_mount_elsewhere_keeps_one_superblock(systems: Path) -> None:
    """A process that unshared its mounts while the layer was mounted (a service with
    PrivateTmp, `ip netns exec`) holds the filesystem after our unmount: mounting it again
    must reuse that superblock, not make a second one on the image (the file written
    through the first was unseen by the second, and the image would be corrupted)."""
    root = systems / "node04"
    assert ensure_layer_fs(root, size=1 << 30)
    other = _copy_holder(root)
    try:
        (root / "upper").mkdir()
        (root / "upper/kept").write_text("kept\n")
        assert unmount_layer_fs(root) and not (root / "upper").exists()
        assert ensure_layer_fs(root)
        assert (root / "upper/kept").read_text() == "kept\n"
        devices = subprocess.run(["losetup", "-j", str(layer_image(root))], text=True,
                                 capture_output=True, check=True).stdout.splitlines()
        assert len(devices) == 1, devices
    finally:
        other.kill()
        other.wait()


def test_a_copy_that_goes_away_while_we_mount_does_not_take_the_device_along(
        systems: Path) -> None:
    """The copy's process exits between the choice of its device and our mount (a job on a
    shared machine; test_image_fs failed so under a loop of `unshare -m`): its superblock
    was the device's last user, and the device, autoclear since `losetup -d`, was detached
    with it ("can't read superblock"). The chosen device is held until the mount."""
    root = systems / "node05"
    assert ensure_layer_fs(root, size=1 << 30)
    (root / "upper").mkdir()
    (root / "upper/kept").write_text("kept\n")
    other = _copy_holder(root)
    try:
        assert unmount_layer_fs(root)
        with held_loop_device(layer_image(root), []) as device:
            other.kill()
            other.wait()
            live = SYS_FS / "ext4" / os.path.basename(device)
            until(lambda: not live.exists(), "the copy's superblock gone", 60,
                  lambda: f"{live} exists")
            mount_device(device, root, EXT4)
    finally:
        other.kill()
        other.wait()
    assert is_layer_fs(root) and (root / "upper/kept").read_text() == "kept\n"


def _copy_holder(root: Path) -> subprocess.Popen[bytes]:
    """A process in a mount namespace of its own that holds a copy of the mount at `root`."""
    other = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sleep", "300"])
    mountinfo = Path(f"/proc/{other.pid}/mountinfo")
    until(lambda: os.stat(f"/proc/{other.pid}/ns/mnt").st_ino
          != os.stat("/proc/self/ns/mnt").st_ino and f" {root} " in mountinfo.read_text(),
          "a copy of the layer's mount in another namespace", 60,
          lambda: mountinfo.read_text())
    return other


def test_a_plain_layer_moves_into_its_image(systems: Path) -> None:
    root = systems / "node02"
    (root / "upper/etc").mkdir(parents=True)
    (root / "upper/etc/motd").write_text("mine\n")
    os.chown(root / "upper/etc/motd", 1234, 1234)
    os.mknod(root / "upper/etc/issue", 0o600 | stat.S_IFCHR, os.makedev(0, 0))  # whiteout
    os.setxattr(root / "upper/etc", "trusted.overlay.opaque", b"y")
    assert ensure_layer_fs(root)
    assert is_layer_fs(root)
    motd = os.stat(root / "upper/etc/motd")
    assert (motd.st_uid, (root / "upper/etc/motd").read_text()) == (1234, "mine\n")
    assert os.stat(root / "upper/etc/issue").st_rdev == os.makedev(0, 0)
    assert os.getxattr(root / "upper/etc", "trusted.overlay.opaque") == b"y"
    kept = [p.name for p in layer_image(root).parent.iterdir() if ".shared-" in p.name]
    assert len(kept) == 1  # the old tree, for the administrator to delete


def test_the_nfs_servers_namespace_gets_the_same_superblock(systems: Path) -> None:
    """`oneroot serve` under `ip netns exec` has a mount namespace of its own: the layer is
    mounted there too, from the same loop device (two superblocks on one image would corrupt
    it)."""
    other = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sleep", "60"])
    try:
        ns = f"/proc/{other.pid}/ns/mnt"
        for _ in range(100):
            if os.stat(ns).st_ino != os.stat("/proc/self/ns/mnt").st_ino:
                break
            subprocess.run(["sleep", "0.05"], check=True)
        root = systems / "node03"
        assert ensure_layer_fs(root, ns_pid=other.pid)
        (root / "written-here").write_text("one superblock\n")
        seen = subprocess.run(["nsenter", "-t", str(other.pid), "-m", "--", "cat",
                               str(root / "written-here")], capture_output=True, text=True)
        assert seen.stdout == "one superblock\n", seen.stderr
        mounts = Path(f"/proc/{other.pid}/mountinfo").read_text()
        assert f" {root} " in mounts
        assert not ensure_layer_fs(root, ns_pid=other.pid)
        # The CLI's namespace catching up with the server's, while the server runs.
        assert unmount_layer_fs(root) and not (root / "written-here").exists()
        assert ensure_layer_fs(root, ns_pid=other.pid, server_running=True)
        (root / "written-here").write_text("still one\n")
        seen = subprocess.run(["nsenter", "-t", str(other.pid), "-m", "--", "cat",
                               str(root / "written-here")], capture_output=True, text=True)
        assert seen.stdout == "still one\n", seen.stderr
    finally:
        other.kill()
        other.wait()


def test_a_foreign_mount_on_the_layer_is_refused(systems: Path) -> None:
    root = systems / "node04"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(root)], check=True)
    with pytest.raises(ConfigError, match="already a mount point"):
        ensure_layer_fs(root)
    assert not layer_image(root).exists()


def test_a_plain_layer_the_running_server_may_export_is_not_mounted_over(
        systems: Path) -> None:
    """ganesha would go on serving the directory it resolved (or its moved copy): the layer
    is moved only while no NFS server runs (`oneroot serve` does it before ganesha starts)."""
    root = systems / "node05"
    (root / "upper").mkdir(parents=True)
    with pytest.raises(ConfigError, match="running NFS server may export"):
        ensure_layer_fs(root, server_running=True)
    assert not is_layer_fs(root) and (root / "upper").is_dir()
    assert ensure_layer_fs(root) and (root / "upper").is_dir()  # server stopped: moved


def test_files_under_the_mount_point_are_never_hidden(systems: Path) -> None:
    root = systems / "node06"
    assert ensure_layer_fs(root)
    assert unmount_layer_fs(root)
    (root / "stray").write_text("written while unmounted\n")
    with pytest.raises(ConfigError, match="would hide them"):
        ensure_layer_fs(root)
    assert (root / "stray").read_text() == "written while unmounted\n"
