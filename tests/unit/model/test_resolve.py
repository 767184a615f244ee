"""Resolution: defaults < groups (in order) < node, with provenance; the cluster, once."""

from __future__ import annotations

import ipaddress
from pathlib import Path, PurePosixPath

import pytest

from oneroot.errors import InvalidValue, NotFound
from oneroot.model import (
    ClusterDirs,
    Group,
    Image,
    InitSystem,
    Node,
    Profile,
    Settings,
    UnionMode,
    resolve,
    resolve_cluster,
)
from oneroot.model.inventory import Inventory
from oneroot.net import MacAddress

IMAGES = {"lab": Image(name="lab", root=PurePosixPath("/srv/images/lab"),
                       init_system=InitSystem.SYSTEMD)}


def _node(name: str = "node01", i: int = 1, groups: tuple[str, ...] = ("default",),
          **overrides: object) -> Node:
    return Node(name=name, macs=(MacAddress.parse(f"52:54:00:00:00:{i:02x}"),),
                address=ipaddress.IPv4Address(f"10.0.0.{10 + i}"), groups=groups,
                overrides=overrides)  # type: ignore[arg-type]


GROUPS = {
    "default": Group(name="default"),
    "compute": Group(name="compute", values={"image": "lab", "kernel_args": ("quiet",),
                                             "union": "server", "group_layer": True}),
    "gpu": Group(name="gpu", values={"kernel_args": ("nvidia.modeset=1",),
                                     "runlevel": "gpu", "union": "client"}),
}


def test_later_groups_win_lists_concatenate_node_overrides_last() -> None:
    node = _node(groups=("default", "compute", "gpu"),
                 kernel_args=("debug",), firmware="uefi")
    r = resolve(node, GROUPS, images=IMAGES, image_root=PurePosixPath("/"))
    p = r.profile
    assert p.union is UnionMode.CLIENT  # gpu comes after compute
    assert p.kernel_args == ("quiet", "nvidia.modeset=1", "debug")
    assert p.image == "lab" and r.image == IMAGES["lab"]
    assert r.provenance["union"] == "group:gpu"
    assert r.provenance["kernel_args"] == "group:compute+group:gpu+node"
    assert r.provenance["firmware"] == "node"
    assert r.provenance["kernel"] == "default"
    assert r.provenance["image"] == "group:compute"
    assert list(r.provenance) == list(r.values)  # `node show` prints them row by row


def test_values_are_plain_text_in_key_order() -> None:
    r = resolve(_node(union="server"), GROUPS, images={}, image_root=PurePosixPath("/"))
    assert r.values["union"] == "server" and type(r.values["union"]) is str
    assert r.values["kernel_args"] == ()
    assert list(r.values)[:3] == ["image", "kernel", "initramfs"]


def test_an_unknown_image_boots_the_settings_image_root() -> None:
    r = resolve(_node(image="elsewhere"), GROUPS, images=IMAGES,
                image_root=PurePosixPath("/srv/root"))
    assert r.image == Image(name="elsewhere", root=PurePosixPath("/srv/root"))


def test_unknown_groups_are_skipped_not_fatal() -> None:
    r = resolve(_node(groups=("nosuch", "compute")), GROUPS, images=IMAGES,
                image_root=PurePosixPath("/"))
    assert r.provenance["union"] == "group:compute"


def test_a_bad_stored_value_is_an_error_not_a_crash() -> None:
    node = _node(union="sideways")
    with pytest.raises(InvalidValue, match="union must be one of"):
        resolve(node, GROUPS, images={}, image_root=PurePosixPath("/"))


def _inventory() -> Inventory:
    settings = Settings(state_dir=PurePosixPath("/var/state/systems"),
                        group_dir=PurePosixPath("/var/state/groups"))
    nodes = {n.name: n for n in (
        _node("node02", 2, ("default", "compute")),
        _node("node01", 1),
        _node("node03", 3, ("default", "compute"), union="client"),
    )}
    return Inventory(settings=settings, groups=GROUPS, nodes=nodes, images=IMAGES)


def test_cluster_resolves_every_node_once_sorted() -> None:
    cluster = resolve_cluster(_inventory())
    assert list(cluster.nodes) == ["node01", "node02", "node03"]
    assert cluster.union_nodes() == ["node02"]
    assert cluster.layer_groups == {"compute"}
    assert list(cluster.group_layers(cluster.node("node02"))) == ["compute"]
    assert list(cluster.group_layers(cluster.node("node01"))) == []
    assert cluster.images_in_use() == {"default", "lab"}
    mac = MacAddress.parse("52:54:00:00:00:02")
    found = cluster.node_for_mac(mac)
    assert found is not None and found.name == "node02"
    assert cluster.node_for_mac(MacAddress.parse("52:54:00:00:00:99")) is None


def test_cluster_names_a_missing_node() -> None:
    with pytest.raises(NotFound, match="no node named 'node09'") as info:
        resolve_cluster(_inventory()).node("node09")
    assert info.value.hint is not None and "node list" in info.value.hint


def test_cluster_dirs_are_the_settings_on_disk() -> None:
    dirs = resolve_cluster(_inventory()).dirs
    assert dirs == ClusterDirs(state_dir=Path("/var/state/systems"),
                               group_dir=Path("/var/state/groups"),
                               boot_dir=Path("/var/lib/oneroot/boot"), image_root=Path("/"))
    assert dirs.node_upper("node01") == Path("/var/state/systems/node01/upper")
    assert dirs.group_layer_dir("compute") == Path("/var/state/groups/compute")


def test_profile_is_frozen() -> None:
    with pytest.raises(AttributeError):
        Profile().union = UnionMode.SERVER  # type: ignore[misc]
