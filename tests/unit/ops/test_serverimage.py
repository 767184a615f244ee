"""The server VM disk's cache: keyed by the tree it is built from, old disks pruned."""

from __future__ import annotations

import os
from pathlib import Path

from oneroot.ops.serverimage import _prune_disks, tree_digest


def _tree(root: Path, text: str) -> Path:
    (root / "src" / "oneroot").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'oneroot'\n")
    (root / "src" / "oneroot" / "x.py").write_text(text)
    (root / "src" / "oneroot" / "__pycache__").mkdir()
    (root / "src" / "oneroot" / "__pycache__" / "x.pyc").write_bytes(os.urandom(8))
    (root / "src" / "oneroot.egg-info").mkdir()
    (root / "src" / "oneroot.egg-info" / "PKG-INFO").write_bytes(os.urandom(8))
    return root


def test_tree_digest_follows_the_source_only(tmp_path: Path) -> None:
    a = _tree(tmp_path / "a", "A = 1\n")
    b = _tree(tmp_path / "b", "A = 1\n")
    c = _tree(tmp_path / "c", "A = 2\n")
    assert tree_digest(a) == tree_digest(b)  # bytecode caches and egg-info do not count
    assert tree_digest(a) != tree_digest(c)


def test_old_disks_are_pruned(tmp_path: Path) -> None:
    for i in range(5):
        d = tmp_path / f"disk-{i}"
        d.mkdir()
        os.utime(d, (1000 + i, 1000 + i))
    (tmp_path / "base-x").mkdir()
    _prune_disks(tmp_path, keep=tmp_path / "disk-0", count=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base-x", "disk-0", "disk-3",
                                                          "disk-4"]
