"""The parts of `image import` that need no OCI tools: which form a source is, and an
image's links followed only inside it."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from oneroot.errors import InvalidValue
from oneroot.ops.image_import import resolve_inside, source_kind


def _tar(path: Path, *names: str) -> Path:
    with tarfile.open(path, "w") as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"{}"))
    return path


def test_source_kinds(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    layout.mkdir()
    (layout / "oci-layout").write_text("{}")
    (layout / "index.json").write_text("{}")
    assert source_kind(layout) == "oci"
    assert source_kind(_tar(tmp_path / "a.tar", "oci-layout", "index.json")) == "oci-archive"
    assert source_kind(_tar(tmp_path / "d.tar", "manifest.json", "x/layer.tar")) == \
        "docker-archive"
    with pytest.raises(InvalidValue, match="neither"):
        source_kind(_tar(tmp_path / "n.tar", "etc/hostname"))
    (tmp_path / "z.tar.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(InvalidValue, match="not an uncompressed tar") as exc:
        source_kind(tmp_path / "z.tar.gz")
    assert "gunzip" in (exc.value.hint or "")


def test_links_are_followed_as_if_the_tree_were_root(tmp_path: Path) -> None:
    tree = tmp_path / "root"
    (tree / "usr/lib").mkdir(parents=True)
    os.symlink("usr/lib", tree / "lib")  # Debian's merged /usr
    assert resolve_inside(tree, "lib/modules") == tree / "usr/lib/modules"
    os.unlink(tree / "lib")
    os.symlink("/etc", tree / "lib")  # absolute: the image's /etc, not the server's
    assert resolve_inside(tree, "lib/modules") == tree / "etc/modules"
    os.unlink(tree / "lib")
    os.symlink("../../../../..", tree / "lib")  # `..` stops at the image's root
    assert resolve_inside(tree, "lib/modules") == tree / "modules"


def test_a_link_loop_is_an_error(tmp_path: Path) -> None:
    tree = tmp_path / "root"
    tree.mkdir()
    os.symlink("b", tree / "a")
    os.symlink("a", tree / "b")
    with pytest.raises(InvalidValue, match="too many links"):
        resolve_inside(tree, "a/modules")
