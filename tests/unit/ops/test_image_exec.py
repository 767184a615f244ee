"""`oneroot image exec`: manifests and their comparison, dpkg status, and the chroot set-up
undone after the command (whether it succeeds or fails)."""

from __future__ import annotations

import datetime
import os
from pathlib import Path, PurePosixPath

import pytest

from oneroot.errors import ConfigError, NotFound, UsageError
from oneroot.model.cluster import Image, InitSystem, Settings
from oneroot.model.inventory import Inventory
from oneroot.ops.image_exec import (
    POLICY_RC_D,
    compare_manifests,
    compare_packages,
    exec_in_image,
    parse_dpkg_status,
    tree_manifest,
)

STATUS = """Package: hello
Status: install ok installed
Architecture: amd64
Version: 2.10-3

Package: gone
Status: deinstall ok config-files
Version: 1

Package: libc6
Status: install ok installed
Architecture: i386
Version: 2.36
"""

NOW = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)


def test_dpkg_status_and_package_changes() -> None:
    before = parse_dpkg_status(STATUS)
    assert before == {"hello": "2.10-3", "libc6:i386": "2.36"}
    after = {"hello": "2.10-4", "tree": "2.1.0"}
    changes = compare_packages(before, after)
    assert changes.installed == ("tree 2.1.0",)
    assert changes.upgraded == ("hello 2.10-3 -> 2.10-4",)
    assert changes.removed == ("libc6:i386 2.36",)


def test_manifest_finds_added_changed_removed(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/a").write_text("a")
    (tmp_path / "etc/b").write_text("b")
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/ignored").write_text("x")
    (tmp_path / "var/log").mkdir(parents=True)
    before = tree_manifest(tmp_path)
    assert "proc/ignored" not in before and "etc/a" in before
    (tmp_path / "etc/a").write_text("longer")
    (tmp_path / "etc/b").unlink()
    (tmp_path / "etc/c").symlink_to("a")
    (tmp_path / "var/log/apt.log").write_text("noise")
    changes = compare_manifests(before, tree_manifest(tmp_path))
    assert changes.added == ("etc/c",)
    assert changes.changed == ("etc/a",)
    assert changes.removed == ("etc/b",)


def _image(tmp_path: Path) -> tuple[Inventory, Path]:
    root = tmp_path / "image"
    for d in ("proc", "sys", "dev", "etc", "usr/sbin", "var/lib/dpkg"):
        (root / d).mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(STATUS)
    (root / "etc/resolv.conf").symlink_to("../run/systemd/resolve/stub-resolv.conf")
    inv = Inventory(settings=Settings(), images={"img": Image(
        name="img", root=PurePosixPath(str(root)), init_system=InitSystem.SYSTEMD)})
    return inv, root


def _fake_chroot(tmp_path: Path) -> str:
    """Runs the command with the image as cwd (a real chroot needs binaries in the image)."""
    script = tmp_path / "fake-chroot"
    script.write_text('#!/bin/sh\ncd "$1" || exit 99\nshift\nexec "$@"\n')
    script.chmod(0o755)
    return str(script)


def _mounted(path: Path) -> bool:
    return any(line.split()[1] == str(path)
               for line in Path("/proc/self/mounts").read_text().splitlines())


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts proc/sys/dev: needs root")


@needs_root
def test_exec_mounts_blocks_services_records_and_cleans_up(tmp_path: Path) -> None:
    inv, root = _image(tmp_path)
    script = ("test -e proc/self/status && test -e dev/null && test -d sys/kernel "
              f"&& test -x {POLICY_RC_D} && test -f etc/resolv.conf "
              "&& echo hi > etc/new && printf '\\nPackage: tree\\nStatus: install ok installed\\n"
              "Version: 2.1\\n\\n' >> var/lib/dpkg/status")
    result = exec_in_image(inv, tmp_path / "home", "img", ["sh", "-c", script],
                           chroot=_fake_chroot(tmp_path), now=NOW)
    assert result.returncode == 0
    assert result.files is not None and "etc/new" in result.files.added
    assert "var/lib/dpkg/status" in result.files.changed
    assert result.packages.installed == ("tree 2.1",)
    assert result.log_path == tmp_path / "home/images/img.changes/20240501T120000Z.txt"
    text = result.log_path.read_text()
    assert "A /etc/new" in text and "installed tree 2.1" in text
    # Everything put back: no mounts, no policy-rc.d, resolv.conf the image's own link.
    assert not any(_mounted(root / d) for d in ("proc", "sys", "dev"))
    assert not (root / POLICY_RC_D).exists()
    assert (root / "etc/resolv.conf").readlink() == Path("../run/systemd/resolve/stub-resolv.conf")
    assert "usr/sbin/policy-rc.d" not in result.files.added


@needs_root
def test_failing_command_still_cleans_up(tmp_path: Path) -> None:
    inv, root = _image(tmp_path)
    result = exec_in_image(inv, tmp_path / "home", "img", ["sh", "-c", "exit 3"],
                           chroot=_fake_chroot(tmp_path), now=NOW)
    assert result.returncode == 3
    assert not any(_mounted(root / d) for d in ("proc", "sys", "dev"))
    assert not (root / POLICY_RC_D).exists()
    again = exec_in_image(inv, tmp_path / "home", "img", ["true"],
                          chroot=_fake_chroot(tmp_path), now=NOW)
    assert again.log_path is not None and again.log_path.name == "20240501T120000Z-2.txt"


def test_refusals(tmp_path: Path) -> None:
    inv, root = _image(tmp_path)
    with pytest.raises(UsageError):
        exec_in_image(inv, tmp_path, "img", [])
    with pytest.raises(NotFound):
        exec_in_image(inv, tmp_path, "nope", ["true"])
    (root / "proc").rmdir()
    (root / "proc").symlink_to("/proc")  # must never mount over the host's /proc
    with pytest.raises(ConfigError):
        exec_in_image(inv, tmp_path, "img", ["true"], chroot=_fake_chroot(tmp_path))


def test_live_root_runs_without_chroot(tmp_path: Path) -> None:
    inv = Inventory(settings=Settings(), images={"default": Image(
        name="default", root=PurePosixPath("/"), init_system=InitSystem.SYSTEMD)})
    result = exec_in_image(inv, tmp_path, "default", ["true"], now=NOW)
    assert result.returncode == 0 and not result.chroot and result.files is None
    assert "no chroot" in result.summary()


def test_a_live_exec_drops_unused_dentries(tmp_path: Path) -> None:
    """The view of `/` kept negative entries that hid a package installed on the server."""
    from oneroot.ops.image_exec import forget_negative_dentries

    knob = tmp_path / "drop_caches"
    forget_negative_dentries(knob)
    assert knob.read_text() == "2\n"
    forget_negative_dentries(tmp_path / "missing" / "drop_caches")  # logged, not raised
