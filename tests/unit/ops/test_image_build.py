"""`image exec` makes a new version: the parent is never touched, unchanged files stay links to
the parent's inodes, whiteouts and opaque directories are applied, and a failed command (or a
failure on the way) leaves no version, no record and no build dir."""

from __future__ import annotations

import datetime
import os
import subprocess
import time
from pathlib import Path, PurePosixPath

import pytest

from oneroot.errors import ConfigError, ExternalToolError
from oneroot.initramfs.kernel import fetch_kernel
from oneroot.inventory.sqlstore import SqlInventory
from oneroot.model import Image, InitSystem, Settings, resolve_cluster
from oneroot.model.inventory import Inventory, plan
from oneroot.model.paths import Paths
from oneroot.ops.catalog import node_boot_files
from oneroot.ops.image_build import exec_new_version, flatten
from oneroot.ops.image_exec import tree_manifest
from oneroot.ops.image_history import gc_image
from oneroot.ops.image_versions import versions_dir
from oneroot.testing.cache import suite_cache_dir
from oneroot.testing.inventory import make_inventory, make_node

NOW = datetime.datetime(2026, 12, 6, 23, 0, 0, tzinfo=datetime.UTC)
STATUS = "Package: base\nStatus: install ok installed\nVersion: 1\n"
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="overlay mounts need root")


def _parent(root: Path) -> Path:
    for d in ("proc", "sys", "dev", "etc/keep", "opt/old", "usr/sbin", "var/lib/dpkg",
              "var/log", "sbin"):
        (root / d).mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(STATUS)
    (root / "etc/same").write_text("same\n")
    (root / "etc/append").write_text("one\n")
    (root / "etc/gone").write_text("gone\n")
    (root / "etc/mode").write_text("mode\n")
    (root / "etc/keep/a").write_text("a\n")
    (root / "opt/old/file").write_text("old\n")
    (root / "etc/link").symlink_to("same")
    (root / "sbin/init").symlink_to("/lib/systemd/systemd")
    return root


def _fake_chroot(tmp_path: Path) -> str:
    """Runs the command with the merged tree as cwd (a real chroot needs binaries in it)."""
    script = tmp_path / "fake-chroot"
    script.write_text('#!/bin/sh\ncd "$1" || exit 99\nshift\nexec "$@"\n')
    script.chmod(0o755)
    return str(script)


@pytest.fixture
def lab(tmp_path: Path) -> tuple[SqlInventory, Paths, Path]:
    paths = Paths(home=tmp_path / "home")
    root = _parent(paths.home / "images" / "lab")
    inv = make_inventory(nodes=[make_node(1, image="lab")], image_root=str(tmp_path / "d"),
                         settings=Settings(boot_dir=PurePosixPath(tmp_path / "boot")),
                         images=[Image(name="lab", root=PurePosixPath(root),
                                       init_system=InitSystem.SYSTEMD)])
    store = SqlInventory(tmp_path / "inventory.db")
    store.apply(plan(Inventory(), inv))
    return store, paths, root


SCRIPT = ("echo two >> etc/append && rm etc/gone && chmod 600 etc/mode && echo new > etc/new "
          "&& rm -rf opt/old && mkdir opt/old && echo fresh > opt/old/other "
          "&& mkdir -p srv/data && echo d > srv/data/x && rm etc/link && ln -s append etc/link "
          "&& printf '\\nPackage: tree\\nStatus: install ok installed\\nVersion: 2.1\\n' "
          ">> var/lib/dpkg/status && echo noise >> var/log/apt.log")


def test_a_command_makes_a_new_version_and_the_parent_stays(
        lab: tuple[SqlInventory, Paths, Path], tmp_path: Path) -> None:
    store, paths, parent = lab
    before = tree_manifest(parent)
    contents = {p: (parent / p).read_bytes() for p in before if (parent / p).is_file()
                and not (parent / p).is_symlink()}
    result = exec_new_version(store, paths, "lab", ["sh", "-c", SCRIPT],
                              chroot=_fake_chroot(tmp_path), now=NOW)
    assert (result.returncode, result.version, result.parent) == (0, 2, 1)
    new = versions_dir(paths, "lab") / "2"
    assert result.root == new
    # the parent is exactly as it was
    assert tree_manifest(parent) == before
    assert {p: (parent / p).read_bytes() for p in contents} == contents
    # the new version has every change
    assert (new / "etc/append").read_text() == "one\ntwo\n"
    assert not (new / "etc/gone").exists() and (new / "etc/new").read_text() == "new\n"
    assert (new / "etc/mode").stat().st_mode & 0o777 == 0o600
    assert sorted(os.listdir(new / "opt/old")) == ["other"]  # opaque: the old file is gone
    assert (new / "srv/data/x").read_text() == "d\n"
    assert os.readlink(new / "etc/link") == "append"
    # unchanged files are the parent's inodes; changed ones are not
    assert (new / "etc/same").stat().st_ino == (parent / "etc/same").stat().st_ino
    assert (new / "etc/keep/a").stat().st_ino == (parent / "etc/keep/a").stat().st_ino
    assert (new / "etc/append").stat().st_ino != (parent / "etc/append").stat().st_ino
    assert not any(n.startswith("trusted.overlay.")
                   for p in ("opt/old", "etc/append", "srv/data")
                   for n in os.listxattr(new / p))
    # recorded, resolved, reported
    assert result.files is not None
    assert "etc/new" in result.files.added and "etc/gone" in result.files.removed
    assert "etc/append" in result.files.changed and "opt/old/file" in result.files.removed
    assert not any(p.startswith("var/log") for p in result.files.changed + result.files.added)
    assert result.packages.installed == ("tree 2.1",)
    assert result.log_path is not None and "# version: lab@2 from lab@1" in \
        result.log_path.read_text()
    v2 = store.load().images["lab"].get_version(2)
    assert v2.complete and v2.parent == 1 and v2.added > 0 and v2.command.startswith("sh -c")
    assert resolve_cluster(store.load()).nodes["node01"].image.root == PurePosixPath(new)
    assert not any(p.name.startswith(".") and p.name.endswith(".build")
                   for p in versions_dir(paths, "lab").iterdir())


def test_a_failed_command_leaves_no_version(lab: tuple[SqlInventory, Paths, Path],
                                            tmp_path: Path) -> None:
    store, paths, parent = lab
    before = tree_manifest(parent)
    result = exec_new_version(store, paths, "lab", ["sh", "-c", "echo x > etc/new; exit 3"],
                              chroot=_fake_chroot(tmp_path), now=NOW)
    assert (result.returncode, result.version, result.parent) == (3, None, 1)
    assert "no new version" in result.summary()
    assert [v.number for v in store.load().images["lab"].all_versions()] == [1]
    assert sorted(p.name for p in versions_dir(paths, "lab").iterdir()) == [".lock"]
    assert tree_manifest(parent) == before and not (parent / "etc/new").exists()
    # the next one takes number 2: nothing of the failed one is left to collide with
    ok = exec_new_version(store, paths, "lab", ["true"], chroot=_fake_chroot(tmp_path))
    assert ok.version == 2


def test_an_error_on_the_way_leaves_no_version(lab: tuple[SqlInventory, Paths, Path],
                                               tmp_path: Path) -> None:
    store, paths, parent = lab
    (parent / "proc").rmdir()
    (parent / "proc").symlink_to("/proc")  # chroot_ready refuses to mount through it
    with pytest.raises(ConfigError):
        exec_new_version(store, paths, "lab", ["true"], chroot=_fake_chroot(tmp_path))
    assert [v.number for v in store.load().images["lab"].all_versions()] == [1]
    assert sorted(p.name for p in versions_dir(paths, "lab").iterdir()) == [".lock"]
    assert not any(line.split()[1].startswith(str(versions_dir(paths, "lab")))
                   for line in Path("/proc/self/mounts").read_text().splitlines())


def test_flatten_applies_a_whiteout_over_a_directory(tmp_path: Path) -> None:
    parent = tmp_path / "p"
    (parent / "d/sub").mkdir(parents=True)
    (parent / "d/sub/f").write_text("x")
    upper = tmp_path / "u"
    upper.mkdir()
    os.mknod(upper / "d", 0o600 | 0o020000, os.makedev(0, 0))  # `c 0 0`: d removed
    out = flatten(parent, upper, tmp_path / "v")
    assert not (tmp_path / "v/d").exists() and (parent / "d/sub/f").exists()
    assert out.removed == ["d"] and out.dropped_bytes == 1


def test_a_version_with_a_kernel_carries_its_own_boot_files(
        lab: tuple[SqlInventory, Paths, Path], tmp_path: Path) -> None:
    """The image provides a kernel: its version gets oneroot's initramfs built for it; the
    next version, whose command did not touch the kernel, shares them; gc takes them along."""
    kernel = fetch_kernel(os.environ.get("ONEROOT_KERNEL_VERSION") or None,
                          cache_dir=suite_cache_dir())
    store, paths, parent = lab
    os.symlink(suite_cache_dir(), paths.home / "cache")  # busybox as fetched before
    (parent / "lib/modules").mkdir(parents=True)
    for src, dest in ((kernel.root / "boot", parent / "boot"),
                      (kernel.modules_dir, parent / "lib/modules" / kernel.version)):
        subprocess.run(["cp", "-al", str(src), str(dest)], check=True)
    (parent / "vmlinuz").symlink_to(f"boot/vmlinuz-{kernel.version}")
    boot_dir = Path(store.load().settings.boot_dir)
    two = exec_new_version(store, paths, "lab", ["true"], chroot=_fake_chroot(tmp_path))
    v2 = store.load().images["lab"].get_version(2)
    assert (v2.kernel, v2.initramfs) == ("images/lab/2/vmlinuz", "images/lab/2/initramfs.img")
    assert (boot_dir / v2.kernel).read_bytes() == kernel.vmlinuz.read_bytes()
    assert (boot_dir / v2.initramfs).stat().st_size > 0 and two.version == 2
    exec_new_version(store, paths, "lab", ["sh", "-c", "echo x > etc/x"],
                     chroot=_fake_chroot(tmp_path))
    v3 = store.load().images["lab"].get_version(3)
    assert (v3.kernel, v3.initramfs) == (v2.kernel, v2.initramfs)
    r = resolve_cluster(store.load()).nodes["node01"]
    assert node_boot_files(r) == (v2.kernel, v2.initramfs)
    # @2 goes, its boot files stay: @3 boots them
    gc_image(store, paths, "lab", {}, now=time.time(), grace=0, apply=True)
    assert [v.number for v in store.load().images["lab"].all_versions()] == [3]
    assert (boot_dir / v3.kernel).is_file()


def test_an_overlay_the_kernel_refuses_is_one_error_with_a_hint(tmp_path: Path) -> None:
    """oneroot's home on an overlayfs (a container's root): overlayfs refuses an upper dir
    there; the exec says why, and leaves no version."""
    for d in ("l", "u", "w", "ovl"):
        (tmp_path / d).mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={tmp_path}/l,upperdir={tmp_path}/u,workdir={tmp_path}/w",
                    str(tmp_path / "ovl")], check=True)
    try:
        paths = Paths(home=tmp_path / "ovl/home")
        root = _parent(paths.home / "images" / "lab")
        store = SqlInventory(tmp_path / "inventory.db")
        store.apply(plan(Inventory(), make_inventory(
            nodes=0, image_root=str(tmp_path / "d"),
            images=[Image(name="lab", root=PurePosixPath(root))])))
        with pytest.raises(ExternalToolError) as info:
            exec_new_version(store, paths, "lab", ["true"], chroot=_fake_chroot(tmp_path))
        assert "local filesystem" in (info.value.hint or "")
        assert [v.number for v in store.load().images["lab"].all_versions()] == [1]
        assert sorted(p.name for p in versions_dir(paths, "lab").iterdir()) == [".lock"]
    finally:
        subprocess.run(["umount", str(tmp_path / "ovl")], check=True)
