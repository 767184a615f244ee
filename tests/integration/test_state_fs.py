"""The state filesystem for real, on a loop-mounted image file: layers only, `nosuid,nodev`,
the state dir 0700, a per-node limit (`layer_quota`) that stops the node that fills its layer
and nobody else, and `oneroot serve`'s remount after the filesystem went away.

The writes are made as root, as the NFS server makes them for a node's root user. This host's
kernel has no ext4/XFS quota support, so `create_state_fs` picks btrfs qgroups here; on a
kernel with `CONFIG_QFMT_V2` it is ext4 with project quotas (the same test runs either way).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from oneroot.model.paths import Paths
from oneroot.model.resolved import resolve_cluster
from oneroot.nfs.view import mount_at
from oneroot.ops.doctor import Level
from oneroot.ops.doctor_server import check_state_fs
from oneroot.ops.nodes_fs import prepare_nodes
from oneroot.ops.statefs import create_state_fs, load_config, mount_for_serve
from oneroot.testing.inventory import make_inventory, make_node, settings_under

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts)"),
]
MIB = 1 << 20


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path("/var/tmp") / f"oneroot-statefs-{os.getpid()}"
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        if mount_at(path / "state") is not None:
            subprocess.run(["umount", str(path / "state")], check=False)
        shutil.rmtree(path, ignore_errors=True)


def _fill(directory: Path, limit_mib: int) -> tuple[int, int | None]:
    """Write 1 MiB files until an error; (MiB written, errno)."""
    chunk = b"\0" * MIB
    for i in range(limit_mib):
        try:
            with open(directory / f"fill{i}", "wb") as f:
                f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            return i, exc.errno
    return limit_mib, None


def test_layers_on_their_own_filesystem_with_a_quota_each(base: Path) -> None:
    settings = settings_under(base / "state")
    paths = Paths(home=base / "home")
    image = base / "image"
    (image / "etc").mkdir(parents=True)
    inv = make_inventory(nodes=[make_node(1, layer_quota="8M"), make_node(2, layer_quota="8M")],
                         settings=settings, image_root=image)

    fs = create_state_fs(settings, paths, size=512 * MIB)
    entry = mount_at(base / "state")
    assert entry is not None and entry.source.startswith("/dev/loop")
    assert {"nosuid", "nodev"} <= set(entry.options.split(",")) | set(
        _mount_flags(base / "state"))
    assert stat.S_IMODE(os.stat(base / "state/systems").st_mode) == 0o700
    assert fs.fstab_line() == (f"{paths.home / 'state.img'} {base / 'state'} {fs.fstype} "
                               f"{fs.options},nofail 0 2")
    assert stat.S_IMODE(os.stat(paths.home / "state.img").st_mode) == 0o600

    prepare_nodes(resolve_cluster(inv), paths, image_root=image, ssh_key_types=("ed25519",))
    # doctor: layers only, nosuid,nodev, quotas, 0700
    assert [f.level for f in check_state_fs(settings)] == [Level.OK]
    (base / "state/backup.tar").write_text("not a layer\n")
    found = list(check_state_fs(settings))
    assert found[0].level is Level.ERROR and "backup.tar" in found[0].message
    (base / "state/backup.tar").unlink()
    node01 = base / "state/systems/node01/upper"
    node02 = base / "state/systems/node02/upper"
    written, err = _fill(node01, 64)
    assert err in (errno.EDQUOT, errno.ENOSPC), (written, err)
    assert written <= 8, f"node01 wrote {written} MiB past its 8M limit"
    # the others carry on
    (node02 / "mine").write_bytes(b"\0" * MIB)
    (base / "state/systems/node02/upper/etc").mkdir(exist_ok=True)

    # gone after a reboot without an fstab line: serve mounts it again, data intact
    subprocess.run(["umount", str(base / "state")], check=True)
    assert mount_at(base / "state") is None
    assert load_config(paths) == fs
    mount_for_serve(settings, paths)
    assert (node02 / "mine").stat().st_size == MIB


def _mount_flags(path: Path) -> list[str]:
    """The per-mount flags (nosuid, nodev) from mountinfo's fourth-from-left options."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(path):
            return fields[5].split(",")
    return []
