"""Image versions in the model: `lab` follows the latest complete version, `lab@N` is fixed,
an image recorded before versions is its own version 1, and a pin is checked."""

from __future__ import annotations

import dataclasses
from pathlib import PurePosixPath

import pytest

from oneroot.errors import InvalidValue, NotFound
from oneroot.model import Group, Image, InitSystem, resolve_cluster
from oneroot.model.imageversion import (
    ImageRef,
    ImageVersion,
    VersionState,
    parse_image_ref,
    version_from_json,
    version_json,
)
from oneroot.model.inventory import validate
from oneroot.ops.boot import root_spec_text
from oneroot.ops.catalog import BootCatalog, node_boot_files
from oneroot.render.cluster import nfs_exports
from oneroot.testing.inventory import make_inventory, make_node

V1 = PurePosixPath("/srv/images/lab")


def _lab(*, building: bool = False) -> Image:
    versions = (
        ImageVersion(number=1, root=V1, init_system="systemd"),
        ImageVersion(number=2, root=PurePosixPath("/srv/lab.versions/2"), parent=1,
                     init_system="openrc"),
        ImageVersion(number=3, root=PurePosixPath("/srv/lab.versions/3"), parent=2,
                     state=VersionState.BUILDING if building else VersionState.COMPLETE,
                     init_system="systemd"),
    )
    return Image(name="lab", root=V1, init_system=InitSystem.SYSTEMD, versions=versions)


@pytest.mark.parametrize(("text", "ref"), [
    ("lab", ImageRef(name="lab")), ("lab@3", ImageRef(name="lab", version=3)),
    (" lab@12 ", ImageRef(name="lab", version=12)),
])
def test_refs_parse(text: str, ref: ImageRef) -> None:
    assert parse_image_ref(text) == ref
    assert str(ref) == text.strip()


@pytest.mark.parametrize("text", ["lab@", "lab@0", "lab@-1", "lab@x", "@3", "Lab@1",
                                  "lab@1@2", "lab@1234567890"])
def test_bad_refs_are_refused_with_a_hint(text: str) -> None:
    with pytest.raises(InvalidValue) as info:
        parse_image_ref(text)
    assert info.value.hint


def test_an_image_without_versions_is_its_own_version_one() -> None:
    image = Image(name="old", root=V1, init_system=InitSystem.OPENRC)
    (v1,) = image.all_versions()
    assert (v1.number, v1.root, v1.complete, v1.init_system) == (1, V1, True, "openrc")
    assert image.at(None) is image and image.at(1) is image and image.ref == "old"


def test_channel_follows_the_latest_complete_version_and_a_pin_is_fixed() -> None:
    image = _lab()
    assert image.at(None).version == 3
    assert image.at(2).root == PurePosixPath("/srv/lab.versions/2")
    assert image.at(2).init_system is InitSystem.OPENRC  # the version's own
    building = _lab(building=True)
    assert building.at(None).version == 2  # a building version is never the channel's


def test_resolve_gives_each_node_its_version_and_root_spec() -> None:
    inv = make_inventory(
        nodes=[make_node(1, groups=("default", "lab")), make_node(2, image="lab@1"),
               make_node(3)],
        groups=[Group(name="lab", values={"image": "lab@2"})], images=[_lab()])
    cluster = resolve_cluster(inv)
    assert [cluster.nodes[n].image.ref for n in ("node01", "node02", "node03")] == [
        "lab@2", "lab@1", "default"]
    assert "/srv/lab.versions/2" in root_spec_text(cluster, cluster.nodes["node01"])
    assert f"{V1}" in root_spec_text(cluster, cluster.nodes["node02"])
    assert sorted(cluster.versions_in_use()) == ["default", "lab@1", "lab@2"]


def test_exports_are_per_version_and_version_one_keeps_its_name_and_id() -> None:
    inv = make_inventory(nodes=[make_node(1, image="lab@2"), make_node(2, image="lab@1")],
                         images=[_lab()], image_root="/srv/images/default")
    catalog = BootCatalog(resolve_cluster(inv), export_ids={"image:lab": 4242})
    exports = {e.comment: e for e in nfs_exports(catalog.cluster_context())}
    assert exports["image lab"].path == V1 and exports["image lab"].export_id == 4242
    assert exports["image lab@2"].path == PurePosixPath("/srv/lab.versions/2")
    assert "image lab@3" not in exports  # nobody boots or runs it
    # a node still running lab@3 (booted before its pin moved) keeps it exported
    running = {e.comment for e in nfs_exports(catalog.cluster_context(running=["lab@3"]))}
    assert "image lab@3" in running
    # a node that booted the image before it had versions runs its version 1
    inv3 = make_inventory(nodes=[make_node(1, image="lab@3")], images=[_lab()],
                          image_root="/srv/images/default")
    before = {e.comment for e in nfs_exports(BootCatalog(resolve_cluster(inv3))
                                             .cluster_context(running=["lab"]))}
    assert {c for c in before if c.startswith("image")} == {
        "image default", "image lab", "image lab@3"}
    # names that are not complete versions are ignored
    ignored = {e.comment for e in nfs_exports(catalog.cluster_context(
        running=["lab@9", "nope@1", "bad@@", "nope"]))}
    assert ignored == {e.comment for e in nfs_exports(catalog.cluster_context())}


def test_validation_refuses_unknown_and_incomplete_versions() -> None:
    good = make_inventory(nodes=[make_node(1, image="lab@2")], images=[_lab()])
    validate(good)
    with pytest.raises(NotFound) as unknown:
        validate(make_inventory(nodes=[make_node(1, image="lab@7")], images=[_lab()]))
    assert "lab@1, lab@2, lab@3" in (unknown.value.hint or "")
    with pytest.raises(InvalidValue) as incomplete:
        validate(make_inventory(groups=[Group(name="g", values={"image": "lab@3"})],
                                images=[_lab(building=True)]))
    assert "not complete (building)" in str(incomplete.value)
    with pytest.raises(InvalidValue):
        validate(make_inventory(nodes=[make_node(1, image="lab@0")], images=[_lab()]))


def test_versions_round_trip_through_their_stored_form() -> None:
    for v in _lab(building=True).versions:
        assert version_from_json(version_json(v)) == v
    with pytest.raises(InvalidValue):
        version_from_json({"root": "/x"})
    with pytest.raises(InvalidValue):
        version_from_json(["not", "a", "mapping"])


def test_a_version_with_its_own_kernel_boots_it_unless_the_profile_names_one() -> None:
    lab = _lab()
    v2 = dataclasses.replace(lab.versions[1], kernel="images/lab/2/vmlinuz",
                             initramfs="images/lab/2/initramfs.img")
    lab = dataclasses.replace(lab, versions=(lab.versions[0], v2, lab.versions[2]))
    inv = make_inventory(
        nodes=[make_node(1, image="lab@2"), make_node(2, image="lab@3"),
               make_node(3, groups=("default", "own"), image="lab@2")],
        groups=[Group(name="own", values={"kernel": "custom/vmlinuz"})], images=[lab],
        image_root="/srv/images/default")
    cluster = resolve_cluster(inv)
    files = {n: node_boot_files(r) for n, r in cluster.nodes.items()}
    assert files == {"node01": ("images/lab/2/vmlinuz", "images/lab/2/initramfs.img"),
                     "node02": ("vmlinuz", "initramfs.img"),
                     "node03": ("custom/vmlinuz", "images/lab/2/initramfs.img")}
    ipxe = BootCatalog(cluster).virtual_file("node01.ipxe")
    assert ipxe is not None and ipxe.image == "lab@2"
    assert b"images/lab/2/vmlinuz" in ipxe.data and b"images/lab/2/initramfs.img" in ipxe.data
