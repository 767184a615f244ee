"""HTTP never serves outside the boot dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from oneroot.serve.http import resolve_in_root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "boot"
    (root / "sub").mkdir(parents=True)
    (root / "vmlinuz").write_bytes(b"k")
    (root / "sub" / "f").write_bytes(b"f")
    (tmp_path / "secret").write_text("x")
    (root / "out").symlink_to(tmp_path / "secret")
    (root / "in").symlink_to("vmlinuz")
    return root


@pytest.mark.parametrize("name", ["vmlinuz", "sub/f", "./sub//f", "in"])
def test_inside(root: Path, name: str) -> None:
    assert resolve_in_root(root, name) is not None


@pytest.mark.parametrize("name", ["../secret", "sub/../../secret", "/etc/passwd", "out",
                                  "a\0b", "x" * 2000,
                                  "x" * 256, "sub/" + "é" * 128, "sub", "", "..",
                                  "sub\\..\\..\\secret"])
def test_refused(root: Path, name: str) -> None:
    # A component over NAME_MAX bytes made is_file() raise ENAMETOOLONG (found by fuzzing).
    assert resolve_in_root(root, name) is None
