"""Fixtures shared by the integration tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from oneroot.nfs.server_union import mounted_unions
from oneroot.nfs.view import read_mounts


@pytest.fixture
def base() -> Iterator[Path]:
    """A scratch dir for server-side unions, with every union mounted under it unmounted after.

    Not tmp_path: overlayfs wants its upper on a filesystem with xattrs and d_type."""
    path = Path("/var/tmp") / f"oneroot-su-{os.getpid()}"
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        for entry in mounted_unions(path / "systems").values():
            subprocess.run(["umount", "-l", str(entry.mount_point)], check=False)
        # then what is mounted below it (knfsd: union nodes' layers of their own), deepest first
        below = {m.mount_point for m in read_mounts() if m.mount_point.is_relative_to(path)}
        for mp in sorted(below, key=lambda p: len(p.parts), reverse=True):
            subprocess.run(["umount", "-l", str(mp)], check=False)
        shutil.rmtree(path, ignore_errors=True)
