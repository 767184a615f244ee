"""`HOME/images` on a filesystem of its own (`oneroot.ops.imagefs`, layer_fs=own with
nfs-ganesha): an existing HOME/images moved in with its versions' hard links, mounted again
after a reboot before anything writes there, grown online when it fills, left alone while a
server runs that may export the old tree; a version of a parent on another filesystem is
copied, one inside it linked. The attack it stops is in test_nfs_ganesha_handles.py."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from oneroot.errors import ConfigError
from oneroot.inventory.sqlstore import SqlInventory
from oneroot.model import Image, LayerFs, NfsServerKind, Settings
from oneroot.model.inventory import Inventory, plan
from oneroot.model.paths import Paths
from oneroot.model.resolved import resolve_cluster
from oneroot.ops.doctor import Level
from oneroot.ops.doctor_server import check_ganesha_filesystems, check_images_mounted
from oneroot.ops.image_build import exec_new_version, flatten
from oneroot.ops.image_history import gc_image
from oneroot.ops.image_versions import versions_dir
from oneroot.ops.imagefs import (
    XFS,
    ensure_images_fs,
    grow_images_fs,
    images_fs_problem,
    images_image,
    images_root,
    is_images_fs,
    mount_images_fs_if_made,
)
from oneroot.ops.images import create_image
from oneroot.ops.layerfs import unmount_layer_fs
from oneroot.ops.nfs_serving import ExportTarget, _export, ganesha_files, ganesha_server
from oneroot.testing.inventory import make_inventory
from oneroot.testing.ports import free_port

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loop mounts)")]

OWN = Settings(nfs_server=NfsServerKind.GANESHA, layer_fs=LayerFs.OWN)


@pytest.fixture
def paths() -> Iterator[Paths]:
    base = Path("/var/tmp") / f"oneroot-imagefs-{os.getpid()}"
    base.mkdir()
    try:
        yield Paths(home=base / "home")
    finally:
        with contextlib.suppress(Exception):
            unmount_layer_fs(base / "home/images", XFS)
        shutil.rmtree(base, ignore_errors=True)


def _doctor_says(paths: Paths, image: Path) -> list[str]:
    """`oneroot doctor`'s ganesha-fs findings about images, cut to their first words."""
    settings = dataclasses.replace(OWN, state_dir=PurePosixPath(paths.home / "systems"),
                                   group_dir=PurePosixPath(paths.home / "groups"))
    cluster = resolve_cluster(make_inventory(
        nodes=0, settings=settings, images=[Image(name="lab", root=PurePosixPath(image))]))
    return [f.message.split(" at ")[0] for f in check_ganesha_filesystems(cluster, paths)
            if f.message.startswith("image lab")]


def _ino(path: Path) -> int:
    return os.lstat(path).st_ino


def test_existing_images_move_in_with_their_hard_links(paths: Paths) -> None:
    v1 = images_root(paths) / "lab"
    v2 = images_root(paths) / "lab.versions/2"
    (v1 / "etc").mkdir(parents=True)
    (v1 / "etc/passwd").write_text("lab\n")
    v2.parent.mkdir()
    subprocess.run(["cp", "-al", str(v1), str(v2)], check=True)  # as image exec makes them
    assert _doctor_says(paths, v1) == [f"image lab ({v1}) is exported from the filesystem"]
    t0 = time.monotonic()
    assert ensure_images_fs(paths, OWN)
    assert _doctor_says(paths, v1) == []  # on the images filesystem now
    print(f"make + mkfs + migrate: {time.monotonic() - t0:.2f} s, "
          f"allocated {os.stat(images_image(paths)).st_blocks * 512 >> 20} MiB")
    assert is_images_fs(paths)
    assert os.stat(images_root(paths)).st_dev != os.stat(paths.home).st_dev
    assert (v2 / "etc/passwd").read_text() == "lab\n"
    assert _ino(v1 / "etc/passwd") == _ino(v2 / "etc/passwd")  # still one inode
    assert os.stat(images_image(paths)).st_blocks * 512 < 128 << 20  # sparse
    kept = [p.name for p in images_image(paths).parent.iterdir() if ".shared-" in p.name]
    assert len(kept) == 1  # the old tree, for the admin to delete
    assert not ensure_images_fs(paths, OWN)  # idempotent
    # A reboot: before `oneroot serve`, an image command mounts it before writing there.
    assert unmount_layer_fs(images_root(paths), XFS) and not v1.exists()
    mount_images_fs_if_made(paths)
    assert is_images_fs(paths) and (v1 / "etc/passwd").read_text() == "lab\n"


def test_nothing_is_made_when_not_wanted_or_while_a_server_runs(paths: Paths) -> None:
    assert not ensure_images_fs(paths, OWN)  # no HOME/images yet: nothing to protect
    (images_root(paths) / "lab").mkdir(parents=True)
    shared = Settings(nfs_server=NfsServerKind.GANESHA, layer_fs=LayerFs.SHARED)
    knfsd = Settings(nfs_server=NfsServerKind.KNFSD, layer_fs=LayerFs.OWN)
    assert not ensure_images_fs(paths, shared) and not ensure_images_fs(paths, knfsd)
    # A running ganesha may export HOME/images/lab: moving it would leave it on the old tree.
    assert not ensure_images_fs(paths, OWN, server_running=True)
    assert not is_images_fs(paths) and not images_image(paths).exists()
    mount_images_fs_if_made(paths)  # no image made: nothing mounted
    assert not is_images_fs(paths)


def test_it_grows_online_when_it_fills(paths: Paths) -> None:
    images_root(paths).mkdir(parents=True)
    assert ensure_images_fs(paths, OWN, size=512 << 20)
    assert grow_images_fs(paths) is None  # empty: nothing to do
    before = os.statvfs(images_root(paths))
    subprocess.run(["fallocate", "-l", str(before.f_bavail * before.f_frsize * 85 // 100),
                    str(images_root(paths) / "big")], check=True)
    t0 = time.monotonic()
    assert grow_images_fs(paths) == 1 << 30
    print(f"grow 512 MiB -> 1 GiB online: {time.monotonic() - t0:.2f} s")
    after = os.statvfs(images_root(paths))
    assert after.f_blocks * after.f_frsize > 1.8 * before.f_blocks * before.f_frsize
    assert (images_root(paths) / "big").exists()  # online: nothing unmounted


def test_a_version_is_linked_inside_and_copied_from_another_filesystem(paths: Paths) -> None:
    outside = paths.home.parent / "outside-root"  # version 1 of `image use DIR`
    (outside / "etc").mkdir(parents=True)
    (outside / "etc/passwd").write_text("outside\n")
    images_root(paths).mkdir(parents=True)
    assert ensure_images_fs(paths, OWN)
    versions = images_root(paths) / "lab.versions"
    versions.mkdir()
    for n, parent in ((2, outside), (3, versions / "2")):
        upper = versions / f".{n}.build/upper"
        (upper / "etc").mkdir(parents=True)
        (upper / "etc/motd").write_text(f"v{n}\n")
        flatten(parent, upper, versions / str(n))
    assert (versions / "2/etc/passwd").read_text() == "outside\n"
    assert _ino(versions / "2/etc/passwd") != _ino(outside / "etc/passwd")  # copied
    assert _ino(versions / "3/etc/passwd") == _ino(versions / "2/etc/passwd")  # linked
    assert (versions / "3/etc/motd").read_text() == "v3\n"


def test_the_nfs_servers_namespace_gets_the_same_filesystem(paths: Paths) -> None:
    """ganesha in a mount namespace of its own (serve under `ip netns exec`): HOME/images is
    mounted there too, from the same loop device; a growth is seen there."""
    other = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sleep", "60"])
    try:
        ns = f"/proc/{other.pid}/ns/mnt"
        for _ in range(100):
            if os.stat(ns).st_ino != os.stat("/proc/self/ns/mnt").st_ino:
                break
            subprocess.run(["sleep", "0.05"], check=True)
        images_root(paths).mkdir(parents=True)
        assert ensure_images_fs(paths, OWN, ns_pid=other.pid, size=512 << 20)
        (images_root(paths) / "written-here").write_text("one superblock\n")
        there = ["nsenter", "-t", str(other.pid), "-m", "--"]
        seen = subprocess.run([*there, "cat", str(images_root(paths) / "written-here")],
                              capture_output=True, text=True)
        assert seen.stdout == "one superblock\n", seen.stderr
        st = os.statvfs(images_root(paths))
        subprocess.run(["fallocate", "-l", str(st.f_bavail * st.f_frsize * 85 // 100),
                        str(images_root(paths) / "big")], check=True)
        assert not ensure_images_fs(paths, OWN, ns_pid=other.pid)  # mounted; grown
        size = subprocess.run([*there, "stat", "-f", "-c", "%b %S", str(images_root(paths))],
                              capture_output=True, text=True, check=True).stdout.split()
        assert int(size[0]) * int(size[1]) > 900 << 20
    finally:
        other.kill()
        other.wait()



def test_after_a_reboot_nothing_lands_on_the_bare_mount_point(paths: Paths,
                                                              tmp_path: Path) -> None:
    """The loop mount is gone after a reboot. `serve`'s start (`nfs apply`) mounts it again
    before ganesha exports anything, even if the settings no longer want it (the images live
    there); a file written on the bare mount point meanwhile makes it refuse (mounting would
    hide it, exporting the bare dir would serve it), and `image create` mounts it first."""
    lab = images_root(paths) / "lab"
    (lab / "etc").mkdir(parents=True)
    (lab / "etc/passwd").write_text("lab\n")
    assert ensure_images_fs(paths, OWN)
    shared = Settings(nfs_server=NfsServerKind.GANESHA, layer_fs=LayerFs.SHARED)
    for settings in (OWN, shared):  # a reboot; layer_fs=shared since
        assert unmount_layer_fs(images_root(paths), XFS) and not lab.exists()
        assert ensure_images_fs(paths, settings)
        assert (lab / "etc/passwd").read_text() == "lab\n"
    assert unmount_layer_fs(images_root(paths), XFS)
    (images_root(paths) / "stray").write_text("written while unmounted\n")
    with pytest.raises(ConfigError, match="mounting would hide them"):
        ensure_images_fs(paths, OWN)
    assert not is_images_fs(paths)
    (images_root(paths) / "stray").unlink()
    tool = tmp_path / "mmdebstrap"
    tool.write_text('#!/bin/sh\nfor a; do t="$a"; done\nfor a; do [ "$a" = "$t" ] && break; '
                    'target="$a"; done\nmkdir -p "$target/sbin"\n'
                    'ln -s /lib/systemd/systemd "$target/sbin/init"\n')
    tool.chmod(0o755)
    made = create_image(None, "fresh", dest_dir=images_root(paths), cache_dir=tmp_path / "c",
                        mirror="http://mirror.test/debian", mmdebstrap=str(tool))
    assert is_images_fs(paths) and made.root == images_root(paths) / "fresh"
    assert os.stat(made.root).st_dev == os.stat(images_root(paths)).st_dev != os.stat(
        paths.home).st_dev
    assert (lab / "etc/passwd").read_text() == "lab\n"


def test_exec_and_gc_on_the_images_filesystem(paths: Paths, tmp_path: Path) -> None:
    """After a reboot, `image exec` mounts the images filesystem before it builds (the
    version lands there, linked to its parent); `image gc` removes a version and gives its
    blocks back to the filesystem that holds the image file (fstrim)."""
    lab = images_root(paths) / "lab"
    for d in ("proc", "sys", "dev", "etc", "sbin", "usr/sbin", "var/lib/dpkg", "var/log"):
        (lab / d).mkdir(parents=True)
    (lab / "etc/passwd").write_text("lab\n")
    (lab / "var/lib/dpkg/status").write_text("")
    (lab / "sbin/init").symlink_to("/lib/systemd/systemd")
    assert ensure_images_fs(paths, OWN)
    assert unmount_layer_fs(images_root(paths), XFS)  # a reboot, before `oneroot serve`
    store = SqlInventory(tmp_path / "inventory.db")
    store.apply(plan(Inventory(), make_inventory(
        nodes=0, settings=Settings(boot_dir=PurePosixPath(tmp_path / "boot")),
        images=[Image(name="lab", root=PurePosixPath(lab))])))
    chroot = tmp_path / "fake-chroot"  # the command runs in the merged tree
    chroot.write_text('#!/bin/sh\ncd "$1" || exit 99\nshift\nexec "$@"\n')
    chroot.chmod(0o755)
    exec_new_version(store, paths, "lab", ["sh", "-c", "head -c 96M /dev/urandom > big"],
                     chroot=str(chroot))
    v2 = versions_dir(paths, "lab") / "2"
    assert is_images_fs(paths) and (v2 / "big").stat().st_size == 96 << 20
    assert _ino(v2 / "etc/passwd") == _ino(lab / "etc/passwd")  # linked, on the XFS
    exec_new_version(store, paths, "lab", ["rm", "big"], chroot=str(chroot))
    os.sync()
    held = os.stat(images_image(paths)).st_blocks * 512
    gc_image(store, paths, "lab", {}, now=time.time(), grace=0, apply=True)
    assert not v2.exists()
    for _ in range(50):  # the holding filesystem may count the punched holes a moment later
        os.sync()
        freed = held - os.stat(images_image(paths)).st_blocks * 512
        if freed > 80 << 20:
            break
        time.sleep(0.2)
    print(f"gc freed {freed >> 20} MiB of the image file")
    assert freed > 80 << 20


def test_the_bare_mount_point_is_never_exported(paths: Paths) -> None:
    """HOME/images unmounted by hand while serve runs: ganesha's supervisor refuses to start it
    again (a crash, a core-config restart) and the exports are not applied (a union remount's
    export), saying why; `oneroot doctor` reports it. Mounted again, all goes on."""
    lab = images_root(paths) / "lab"
    (lab / "etc").mkdir(parents=True)
    (lab / "etc/passwd").write_text("lab\n")
    assert ensure_images_fs(paths, OWN)
    assert images_fs_problem(paths) is None and list(check_images_mounted(paths)) == []
    settings = dataclasses.replace(OWN, state_dir=PurePosixPath(paths.home / "systems"),
                                   group_dir=PurePosixPath(paths.home / "groups"))
    cluster = resolve_cluster(make_inventory(
        nodes=0, settings=settings, images=[Image(name="lab", root=PurePosixPath(lab))]))
    conf = ganesha_files(paths).conf
    assert unmount_layer_fs(images_root(paths), XFS)  # by hand, serve running
    problem = f"{images_root(paths)} is not mounted: the images are on its own filesystem"
    with pytest.raises(ConfigError, match=f"^{re.escape(problem)}.*: not exporting it$") as refused:
        _export(cluster, paths, ExportTarget())
    assert "`oneroot nfs apply`" in (refused.value.hint or "")
    assert not conf.exists()
    [said] = check_images_mounted(paths)
    assert said.level is Level.ERROR and said.message.startswith(problem) and said.fix

    async def supervisor_start() -> int:
        server = ganesha_server(cluster, paths, binary="/bin/false", port=free_port())
        with pytest.raises(ConfigError, match=re.escape(problem)):
            async with server:
                pass
        return server.status.starts

    assert asyncio.run(supervisor_start()) == 0  # refused before ganesha ran
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(images_root(paths))], check=True)
    try:  # something else mounted there
        assert "is mounted from tmpfs (tmpfs), not from its own filesystem" in (
            images_fs_problem(paths) or "")
    finally:
        subprocess.run(["umount", str(images_root(paths))], check=True)
    assert ensure_images_fs(paths, OWN)  # `oneroot nfs apply` with ganesha down
    _export(cluster, paths, ExportTarget())
    assert conf.exists() and list(check_images_mounted(paths)) == []
