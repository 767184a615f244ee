"""One atomic write: temp name in the same directory, fsync, rename; nothing half-written."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from oneroot.fsutil import (
    atomic_file,
    fsync_path,
    make_whiteout,
    write_atomic,
    write_if_changed,
)
from oneroot.fsutil.whiteout import is_whiteout


def test_write_atomic_and_write_if_changed(tmp_path: Path) -> None:
    path = tmp_path / "a" / "exports"
    write_atomic(path, b"one\n", mode=0o600)
    assert path.read_bytes() == b"one\n" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert write_if_changed(path, b"one\n", mode=0o600) is False
    assert write_if_changed(path, b"one\n", mode=0o644) is True
    assert write_if_changed(path, b"two\n", mode=0o644) is True
    assert path.read_bytes() == b"two\n"
    assert [p.name for p in path.parent.iterdir()] == ["exports"]


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"old")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(RuntimeError), atomic_file(fd, "f") as f:
            f.write(b"half")
            raise RuntimeError("disk gone")
    finally:
        os.close(fd)
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
    assert (tmp_path / "f").read_bytes() == b"old"


def test_write_replaces_a_planted_link_instead_of_following_it(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("server data")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").symlink_to(secret)
    assert write_if_changed(tmp_path / "d" / "f", b"x") is True
    assert secret.read_text() == "server data"
    assert not (tmp_path / "d" / "f").is_symlink()


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_whiteout(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    make_whiteout(tmp_path / "f")
    assert is_whiteout(os.lstat(tmp_path / "f"))


def test_fsync_path_never_follows_a_link_and_checks_a_directory(tmp_path: Path) -> None:
    """The one fsync-by-path helper (EROFS builds, image versions, the pin history)."""
    made = tmp_path / "made.erofs"
    made.write_bytes(b"x")
    fsync_path(made)
    fsync_path(tmp_path, directory=True)
    (tmp_path / "link").symlink_to(made)
    with pytest.raises(OSError) as link:
        fsync_path(tmp_path / "link")
    assert link.value.errno == errno.ELOOP
    with pytest.raises(NotADirectoryError):
        fsync_path(made, directory=True)
