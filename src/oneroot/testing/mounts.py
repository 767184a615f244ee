"""Tests: the mount table `nfs_plan` reads, with disks of their own where a test wants them."""

from __future__ import annotations

from pathlib import Path

import pytest

from oneroot.nfs.view import MountEntry


def disks_at(monkeypatch: pytest.MonkeyPatch, *roots: str | Path) -> None:
    """`nfs_plan`'s mount table (`ops.nfs_serving.read_mounts`): ours, with a disk of its own
    mounted at each of `roots` (under knfsd, a union's image must be one: `ops.union_fs`)."""
    from oneroot.nfs.view import read_mounts as real
    from oneroot.ops import nfs_serving

    def mounts(*args: Path) -> list[MountEntry]:
        return [*real(*args), *(MountEntry(mount_point=Path(r), fstype="ext4",
                                           source="/dev/vdz", options="ro", root="/")
                                for r in roots)]

    monkeypatch.setattr(nfs_serving, "read_mounts", mounts)
