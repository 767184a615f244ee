"""Layer directories: created with safe owners and modes, repaired in place, never replaced;
the `c 0 0` whiteout and the opaque mark."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from oneroot.errors import ConfigError
from oneroot.overlay import (
    LayerDirs,
    ensure_layer,
    is_opaque,
    is_whiteout,
    make_whiteout,
    set_opaque,
)

ROOT = os.geteuid() == 0


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_node_layer_is_created_with_its_modes(tmp_path: Path) -> None:
    dirs = LayerDirs.node(tmp_path / "systems", "node01")
    assert ensure_layer(dirs) is True
    assert dirs.work is not None
    assert (_mode(dirs.root), _mode(dirs.upper), _mode(dirs.work)) == (0o755, 0o755, 0o700)
    if ROOT:
        assert os.lstat(dirs.upper).st_uid == 0


def test_ensure_is_idempotent_and_keeps_the_inode(tmp_path: Path) -> None:
    dirs = LayerDirs.node(tmp_path, "node01")
    ensure_layer(dirs)
    (dirs.upper / "etc").mkdir()
    inode = os.lstat(dirs.upper).st_ino
    assert ensure_layer(dirs) is False
    assert os.lstat(dirs.upper).st_ino == inode  # never rm -rf + mkdir: handles stay valid
    assert (dirs.upper / "etc").is_dir()


def test_wrong_mode_is_repaired_in_place(tmp_path: Path) -> None:
    dirs = LayerDirs.node(tmp_path, "node01")
    ensure_layer(dirs)
    assert dirs.work is not None
    os.chmod(dirs.work, 0o777)
    inode = os.lstat(dirs.work).st_ino
    assert ensure_layer(dirs) is True
    assert _mode(dirs.work) == 0o700 and os.lstat(dirs.work).st_ino == inode


def test_a_symlink_where_the_layer_should_be_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "node01").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="not a directory"):
        ensure_layer(LayerDirs.node(tmp_path, "node01"))


def test_group_layer_has_no_work_dir(tmp_path: Path) -> None:
    dirs = LayerDirs.group(tmp_path, "compute")
    ensure_layer(dirs)
    assert dirs.upper == dirs.root and dirs.root.is_dir()
    assert list(dirs.root.iterdir()) == []  # the group's files go here directly


@pytest.mark.skipif(not ROOT, reason="mknod needs root")
def test_whiteout_is_a_char_device_0_0(tmp_path: Path) -> None:
    target = tmp_path / "motd"
    target.write_text("x")
    make_whiteout(target)
    st = os.lstat(target)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0 and is_whiteout(st)
    make_whiteout(target)  # again: still one whiteout
    assert is_whiteout(os.lstat(target))


@pytest.mark.skipif(not ROOT, reason="trusted.* xattrs need root")
def test_opaque_mark(tmp_path: Path) -> None:
    assert not is_opaque(tmp_path)
    set_opaque(tmp_path)
    assert is_opaque(tmp_path)
