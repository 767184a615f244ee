"""Writing into a node-writable layer never follows a link the node planted."""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

import pytest

from oneroot.errors import ConfigError
from oneroot.overlay.layer import is_whiteout
from oneroot.overlay.safefs import image_dir_attrs, read_file, write_file, write_whiteout


def test_write_creates_parents_and_is_skipped_when_equal(tmp_path: Path) -> None:
    rel = PurePosixPath("etc/ssh/key")
    assert write_file(tmp_path, rel, b"k", mode=0o600) is True
    assert read_file(tmp_path, rel) == (b"k", 0o600)
    assert write_file(tmp_path, rel, b"k", mode=0o600) is False
    assert write_file(tmp_path, rel, b"k", mode=0o644) is True  # a mode change is a change
    assert not [p for p in (tmp_path / "etc/ssh").iterdir() if p.name.startswith(".")]


def test_a_symlinked_parent_planted_by_the_node_is_refused(tmp_path: Path) -> None:
    server_etc = tmp_path / "server-etc"
    server_etc.mkdir()
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "etc").symlink_to(server_etc)
    with pytest.raises(ConfigError, match="not a directory"):
        write_file(upper, PurePosixPath("etc/hostname"), b"node01\n")
    assert list(server_etc.iterdir()) == []


def test_a_symlink_at_the_file_is_replaced_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("server data")
    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    (upper / "etc" / "hostname").symlink_to(secret)
    assert write_file(upper, PurePosixPath("etc/hostname"), b"node01\n")
    assert secret.read_text() == "server data"
    assert not (upper / "etc" / "hostname").is_symlink()


@pytest.mark.parametrize("bad", ["/etc/x", "../x", "etc/../../x"])
def test_paths_must_stay_inside(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError):
        write_file(tmp_path, PurePosixPath(bad), b"")


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_whiteout_replaced_by_directory_when_a_generated_file_needs_it(tmp_path: Path) -> None:
    assert write_whiteout(tmp_path, PurePosixPath("etc/ssh")) is True
    assert is_whiteout(os.lstat(tmp_path / "etc/ssh"))
    assert write_whiteout(tmp_path, PurePosixPath("etc/ssh")) is False
    write_file(tmp_path, PurePosixPath("etc/ssh/ssh_host_ed25519_key"), b"k", mode=0o600)
    assert stat.S_ISDIR(os.lstat(tmp_path / "etc/ssh").st_mode)


def test_parent_dirs_copy_the_images_attributes(tmp_path: Path) -> None:
    image = tmp_path / "image"
    (image / "etc" / "ssh").mkdir(parents=True)
    os.chmod(image / "etc" / "ssh", 0o711)
    attrs = image_dir_attrs(image, PurePosixPath("etc/ssh/key"))
    upper = tmp_path / "upper"
    upper.mkdir()
    write_file(upper, PurePosixPath("etc/ssh/key"), b"k", attrs_for=attrs)
    assert stat.S_IMODE(os.lstat(upper / "etc" / "ssh").st_mode) == 0o711
