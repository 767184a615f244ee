"""The version API on a real inventory: a tree becomes the next version, a pin is checked,
an unfinished version is never resolved and leaves nothing behind when abandoned."""

from __future__ import annotations

import dataclasses
from pathlib import Path, PurePosixPath

import pytest

from oneroot.errors import InvalidValue, NotFound
from oneroot.inventory.sqlstore import SqlInventory
from oneroot.model import Group, Image, InitSystem, resolve_cluster
from oneroot.model.inventory import Inventory, plan
from oneroot.model.paths import Paths
from oneroot.ops.image_versions import (
    abandon_version,
    add_version_from_tree,
    begin_version,
    build_dir,
    image_lock,
    pin_group,
    pin_node,
    resolve_version,
    version_dir,
    with_stored_versions,
)
from oneroot.testing.inventory import make_inventory, make_node


def _tree(path: Path, marker: str) -> Path:
    (path / "sbin").mkdir(parents=True)
    (path / "lib/systemd").mkdir(parents=True)
    (path / "lib/systemd/systemd").write_text("")
    (path / "sbin/init").symlink_to("/lib/systemd/systemd")
    (path / "marker").write_text(marker)
    return path


@pytest.fixture
def setup(tmp_path: Path) -> tuple[SqlInventory, Paths, Path]:
    paths = Paths(home=tmp_path / "home")
    (paths.home / "images").mkdir(parents=True)
    v1 = _tree(paths.home / "images" / "lab", "one")
    inv = make_inventory(nodes=[make_node(1, groups=("default", "compute")), make_node(2)],
                         groups=[Group(name="compute", values={"image": "lab"})],
                         images=[Image(name="lab", root=PurePosixPath(v1),
                                       init_system=InitSystem.SYSTEMD)],
                         image_root=str(tmp_path / "default-root"))
    store = SqlInventory(tmp_path / "inventory.db")
    store.apply(plan(Inventory(), inv))
    return store, paths, v1


def test_a_tree_becomes_the_next_version_and_the_channel_follows(
        setup: tuple[SqlInventory, Paths, Path]) -> None:
    store, paths, v1 = setup
    tree = _tree(paths.home / "images" / "incoming", "two")
    v2 = add_version_from_tree(store, paths, "lab", tree, command="import x", size=7)
    assert (v2.number, v2.parent, v2.complete, v2.size) == (2, 1, True, 7)
    assert Path(v2.root) == version_dir(paths, "lab", 2) and not tree.exists()
    assert (Path(v2.root) / "marker").read_text() == "two"
    inv = store.load()
    image, version = resolve_version(inv, "lab")
    assert version == v2 and image.versions[0].root == PurePosixPath(v1)  # @1 recorded
    cluster = resolve_cluster(inv)
    assert cluster.nodes["node01"].image.ref == "lab@2"  # the group follows the channel
    # pinning the group back to lab@1: its node boots the old tree again
    assert pin_group(store, "compute", "lab@1") == "lab"
    assert resolve_cluster(store.load()).nodes["node01"].image.root == PurePosixPath(v1)
    assert pin_node(store, "node02", "lab@2") == ""
    assert resolve_cluster(store.load()).nodes["node02"].image.ref == "lab@2"


def test_pins_are_refused_with_a_hint(setup: tuple[SqlInventory, Paths, Path]) -> None:
    store, paths, _ = setup
    with image_lock(paths, "lab"):
        building = begin_version(store, paths, "lab", command="apt-get install x")
    assert building.number == 2 and not building.complete
    for ref, error in (("lab@2", InvalidValue), ("lab@5", NotFound), ("nope", NotFound),
                       ("lab@x", InvalidValue)):
        with pytest.raises(error) as info:
            pin_group(store, "compute", ref)
        assert info.value.hint, ref
    assert resolve_cluster(store.load()).nodes["node01"].image.ref == "lab@1"


def test_an_abandoned_version_leaves_no_record_and_no_tree(
        setup: tuple[SqlInventory, Paths, Path]) -> None:
    store, paths, _ = setup
    with image_lock(paths, "lab"):
        version = begin_version(store, paths, "lab", command="false")
        build_dir(paths, "lab", version.number).mkdir()
        abandon_version(store, paths, "lab", version)
    assert not build_dir(paths, "lab", version.number).exists()
    assert [v.number for v in store.load().images["lab"].all_versions()] == [1]


def test_a_live_root_has_no_versions(tmp_path: Path) -> None:
    store = SqlInventory(tmp_path / "inventory.db")
    store.apply(plan(Inventory(), make_inventory()))
    paths = Paths(home=tmp_path / "home")
    with pytest.raises(InvalidValue) as info:
        begin_version(store, paths, "default", command="apt-get install x")
    assert "live" in str(info.value) and info.value.hint
    with pytest.raises(InvalidValue) as pin:
        pin_node(store, "node01", "default@1")
    assert "live" in str(pin.value) and pin.value.hint
    pin_node(store, "node01", "default")


def test_a_file_without_versions_keeps_the_stored_ones(
        setup: tuple[SqlInventory, Paths, Path]) -> None:
    store, paths, _ = setup
    add_version_from_tree(store, paths, "lab", _tree(paths.home / "t", "two"), command="x")
    stored = store.load()
    bare = stored.replace(images={n: dataclasses.replace(i, versions=())
                                  for n, i in stored.images.items()})
    assert with_stored_versions(stored, bare) == stored
    moved = bare.replace(images={**bare.images, "lab": dataclasses.replace(
        bare.images["lab"], root=PurePosixPath("/elsewhere"))})
    assert with_stored_versions(stored, moved).images["lab"].versions == ()
