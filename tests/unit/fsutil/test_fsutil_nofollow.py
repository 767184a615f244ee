"""The no-follow walker: links, FIFOs, devices, giant files and deep trees a node plants in its
own layer are refused (or, for entries oneroot owns, recreated), never followed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from oneroot.fsutil import (
    DirAttrs,
    UnsafePath,
    empty_dir,
    ensure_fresh_dir,
    open_dir,
    read_bounded,
    remove_tree,
    walk,
)


@pytest.fixture()
def outside(tmp_path: Path) -> Path:
    """A directory of the server's the node must never reach."""
    d = tmp_path / "server"
    d.mkdir(mode=0o711)
    (d / "secret").write_text("server data\n")
    os.chmod(d, 0o711)
    return d


def _untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_text() == "server data\n"
    assert stat.S_IMODE(outside.stat().st_mode) == 0o711


def test_a_link_where_a_directory_is_needed_is_refused(tmp_path: Path, outside: Path) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "etc").symlink_to(outside)
    for create in (False, True):
        with pytest.raises(UnsafePath, match="etc is a symbolic link"), \
                open_dir(upper, ("etc", "ssh"), create=create):
            pass
    _untouched(outside)


def test_created_dirs_get_owner_and_mode_through_the_descriptor(tmp_path: Path) -> None:
    with open_dir(tmp_path, ("a", "b"), create=True,
                  attrs_for={("a",): DirAttrs(mode=0o750)}) as fd:
        assert stat.S_ISDIR(os.fstat(fd).st_mode)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o750
    assert stat.S_IMODE((tmp_path / "a/b").stat().st_mode) == 0o755


def test_ensure_fresh_dir_replaces_a_planted_link(tmp_path: Path, outside: Path) -> None:
    (tmp_path / "merged").symlink_to(outside)
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = ensure_fresh_dir(dfd, "merged", DirAttrs(mode=0o755))
        os.close(fd)
    finally:
        os.close(dfd)
    st = os.lstat(tmp_path / "merged")
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755
    _untouched(outside)


@pytest.mark.parametrize("what", ["fifo", "sparse", "link", "device"])
def test_bounded_reads_refuse_what_is_not_a_small_file(tmp_path: Path, outside: Path,
                                                       what: str) -> None:
    target = tmp_path / "hostname"
    if what == "fifo":
        os.mkfifo(target)  # a blocking open would hang here forever
    elif what == "sparse":
        with target.open("wb") as f:
            f.truncate(1 << 40)  # 1 TiB, no blocks
    elif what == "link":
        target.symlink_to(outside / "secret")
    else:
        os.mknod(target, 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(UnsafePath, match="hostname"):
            read_bounded(dfd, "hostname", limit=4096)
    finally:
        os.close(dfd)


def test_walks_are_bounded_in_depth(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["d"] * 12)
    deep.mkdir(parents=True)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert len(list(walk(fd, max_depth=20))) == 12
        with pytest.raises(UnsafePath, match="deep"):
            list(walk(fd, max_depth=5))
    finally:
        os.close(fd)


def test_walk_and_remove_never_follow_links(tmp_path: Path, outside: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "link").symlink_to(outside)
    (tree / "dirlink").symlink_to(outside)
    fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
    try:
        names = sorted("/".join(p) for p, _st, _pfd in walk(fd))
        assert names == ["dirlink", "sub", "sub/link"]
        assert len(empty_dir(fd)) == 3
    finally:
        os.close(fd)
    (tree / "x").symlink_to(outside)
    remove_tree(tmp_path, ("tree",))
    assert not tree.exists()
    _untouched(outside)
