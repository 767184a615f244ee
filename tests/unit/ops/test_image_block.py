"""union=block's files, made for real: an image version's EROFS file (reproducible, built when
a block node's version is completed) and a node's ext4 top (mkfs.ext4, never replaced)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from oneroot.errors import InvalidValue
from oneroot.inventory.sqlstore import SqlInventory
from oneroot.model import Group, Image, InitSystem, Settings, resolve_cluster
from oneroot.model.inventory import Inventory, plan
from oneroot.model.paths import Paths
from oneroot.ops.image_block import (
    block_file,
    build_block,
    ensure_tops,
    read_record,
    top_file,
)
from oneroot.ops.image_versions import add_version_from_tree
from oneroot.overlay.blockimage import Compression, build_erofs, make_ext4_top
from oneroot.testing.inventory import make_inventory, make_node


def _tree(path: Path, marker: str) -> Path:
    (path / "sbin").mkdir(parents=True)
    (path / "etc").mkdir()
    (path / "etc/motd").write_text(marker)
    os.utime(path / "etc/motd", (1_600_000_000, 1_600_000_000))
    (path / "sbin/init").symlink_to("/lib/systemd/systemd")
    return path


def _extract(image: Path, dest: Path) -> None:
    subprocess.run(["fsck.erofs", f"--extract={dest}", str(image)], check=True,
                   capture_output=True)


@pytest.mark.parametrize("compress", [Compression.NONE, Compression.LZ4])
def test_an_erofs_build_is_reproducible_and_keeps_mtimes(tmp_path: Path,
                                                          compress: Compression) -> None:
    tree = _tree(tmp_path / "tree", "hello")
    one = build_erofs(tree, tmp_path / "a.erofs", label="lab@2", epoch=1_700_000_000,
                      compress=compress)
    os.utime(tree, None)  # a directory touched after the version: clamped to the epoch
    two = build_erofs(tree, tmp_path / "b.erofs", label="lab@2", epoch=1_700_000_000,
                      compress=compress)
    assert one.sha256 == two.sha256 and one.size == two.size > 0
    other = build_erofs(tree, tmp_path / "c.erofs", label="lab@3", epoch=1_700_000_000,
                        compress=compress)
    assert other.sha256 != one.sha256  # the UUID is the version's
    _extract(tmp_path / "a.erofs", tmp_path / "out")
    assert (tmp_path / "out/etc/motd").read_text() == "hello"
    assert (tmp_path / "out/etc/motd").stat().st_mtime == 1_600_000_000
    assert os.readlink(tmp_path / "out/sbin/init") == "/lib/systemd/systemd"
    assert not list(tmp_path.glob(".*oneroot-tmp"))


@pytest.fixture
def block_setup(tmp_path: Path) -> tuple[SqlInventory, Paths, Inventory]:
    paths = Paths(home=tmp_path / "home")
    v1 = _tree(paths.home / "images" / "lab", "one")
    _tree(paths.home / "images" / "other", "x")
    inv = make_inventory(
        nodes=[make_node(1, groups=("default", "compute")), make_node(2)],
        groups=[Group(name="compute", values={"image": "lab", "union": "block",
                                              "block_top_size": "16M"})],
        images=[Image(name="lab", root=PurePosixPath(v1), init_system=InitSystem.SYSTEMD)],
        image_root=str(tmp_path / "default-root"))
    inv = inv.replace(settings=dataclasses.replace(
        inv.settings, block_dir=PurePosixPath(tmp_path / "blocks"),
        state_dir=PurePosixPath(tmp_path / "state")))
    store = SqlInventory(tmp_path / "inventory.db")
    store.apply(plan(Inventory(), inv))
    return store, paths, inv


def test_a_new_version_a_block_node_boots_gets_its_erofs(
        block_setup: tuple[SqlInventory, Paths, Inventory]) -> None:
    store, paths, _ = block_setup
    tree = _tree(paths.home / "images" / "incoming", "two")
    add_version_from_tree(store, paths, "lab", tree, command="exec x")
    cluster = resolve_cluster(store.load())
    image = cluster.nodes["node01"].image
    assert image.ref == "lab@2"
    erofs = Path(block_file(cluster.settings, image))
    assert erofs.name == "lab@2.erofs" and erofs.is_file()
    record = read_record(cluster.settings, image)
    assert record is not None and record.size == erofs.stat().st_size and record.seconds > 0
    # node02 boots the default image (client mode): nothing else was built
    assert sorted(p.name for p in erofs.parent.iterdir()) == ["lab@2.erofs",
                                                              "lab@2.erofs.json"]


def test_a_block_node_gets_an_ext4_top_once(
        block_setup: tuple[SqlInventory, Paths, Inventory]) -> None:
    store, _, _ = block_setup
    cluster = resolve_cluster(store.load())
    assert ensure_tops(cluster) == ["node01"]
    top = Path(top_file(cluster.settings, "node01"))
    assert top.stat().st_size == 16 << 20 and top.stat().st_mode & 0o777 == 0o600
    listing = subprocess.run(["debugfs", "-R", "ls -p /", str(top)], capture_output=True,
                             text=True, check=True).stdout
    assert "/upper/" in listing and "/work/" in listing
    stamp = top.stat().st_mtime_ns
    assert ensure_tops(cluster) == []  # an existing top is the node's: never remade
    assert top.stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError):
        make_ext4_top(top, size=16 << 20, label="node01")


def test_an_image_seen_through_a_view_is_built_from_the_view(tmp_path: Path) -> None:
    """A live root's EROFS comes from its masked view (never the root as it is), without the
    block dir, with the build's time as epoch (its files' mtimes kept)."""
    root = _tree(tmp_path / "root", "root")
    view = _tree(tmp_path / "view", "seen through the view")
    (view / "blocks").mkdir()
    (view / "blocks/other.erofs").write_text("an earlier build")
    s = Settings(block_dir=PurePosixPath(root / "blocks"))
    image = Image(name="host", root=PurePosixPath(root))
    record = build_block(s, image, view=view)
    assert record.label == "host@1" and record.epoch > 1_700_000_000
    # the record file says what the build returned, in the keys it always had
    again = read_record(s, image)
    assert again is not None and again.to_json() == record.to_json()
    saved = json.loads(Path(f"{block_file(s, image)}.json").read_text())
    assert list(saved) == ["image", "size", "seconds", "sha256", "compress", "epoch", "built"]
    assert (saved["image"], saved["compress"]) == ("host@1", "none")
    _extract(Path(block_file(s, image)), tmp_path / "out")
    assert (tmp_path / "out/etc/motd").read_text() == "seen through the view"
    assert (tmp_path / "out/etc/motd").stat().st_mtime == 1_600_000_000
    assert not (tmp_path / "out/blocks").exists()
    live = Image(name="default", root=PurePosixPath("/"))
    with pytest.raises(InvalidValue, match="its masked view, which is not mounted"):
        build_block(s, live)
