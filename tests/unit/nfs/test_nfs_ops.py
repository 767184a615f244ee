"""`nfs_plan`: the ganesha config exports the server's `/` from its masked view at Pseudo `/`,
each node's dir at its real path to that node alone; knfsd gets the view's own path."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from oneroot.model import Image, NfsServerKind
from oneroot.model.imageversion import ImageVersion
from oneroot.model.inventory import Inventory
from oneroot.model.paths import Paths
from oneroot.model.resolved import resolve_cluster
from oneroot.nfs.knfsd import JunctionBind
from oneroot.nfs.view import MountEntry
from oneroot.ops.nfs_serving import nfs_plan
from oneroot.testing.ganesha import exports as ganesha_exports
from oneroot.testing.inventory import layer_group, make_inventory, make_node

# The server's `/` and nothing else mounted: every image directory is on it.
ROOT_ONLY = [MountEntry(mount_point=Path("/"), fstype="ext4", source="/dev/vda1", options="rw")]


def _inv(image_root: str = "/") -> Inventory:
    return make_inventory(image_root=image_root)


def test_ganesha_exports_the_view_at_pseudo_root() -> None:
    plan = nfs_plan(resolve_cluster(_inv()), Paths(home=Path("/var/lib/oneroot")))
    exports = ganesha_exports(plan.text)
    assert exports["/"] == ("/var/lib/oneroot/views/default", "10.0.0.0/24")
    assert exports["/var/state/systems/node01"] == ("/var/state/systems/node01", "10.0.0.11")
    assert exports["/var/state/systems/node02"] == ("/var/state/systems/node02", "10.0.0.12")
    assert "Protocols = 4;" in plan.text  # v4 only: no rpcbind needed
    view = plan.views["default"]
    assert PurePosixPath("var/state/systems/node01") in view.junctions
    # identity store, inventory
    assert (PurePosixPath("var/lib/oneroot"), "oneroot home") in view.policy.owned
    assert "Attr_Expiration_Time = 10;" in plan.text.split("# image default")[1].split("}\n}")[0]


def test_an_image_directory_is_exported_as_is() -> None:
    plan = nfs_plan(resolve_cluster(_inv("/srv/images/bookworm")), Paths())
    assert plan.views == {}
    assert ganesha_exports(plan.text)["/srv/images/bookworm"][0] == "/srv/images/bookworm"


def test_knfsd_exports_the_view_as_the_nfsv4_root() -> None:
    """docs/nfs.md: the view is `fsid=0` without crossmnt; each node's layer is bound at its
    junction in the view and exported there to that node alone, so the seed's paths work."""
    plan = nfs_plan(resolve_cluster(_inv()), Paths(), kind=NfsServerKind.KNFSD)
    lines = [ln for ln in plan.text.splitlines() if ln and not ln.startswith("#")]
    view = "/var/lib/oneroot/views/default"
    assert lines[0] == (f"{view} 10.0.0.0/24(ro,sync,all_squash,anonuid=65534,anongid=65534,"
                        "no_subtree_check,mp,fsid=0)")
    exported = {ln.split()[0]: ln.split()[1] for ln in lines}
    for node, address in (("node01", "10.0.0.11"), ("node02", "10.0.0.12")):
        options = exported[f"{view}/var/state/systems/{node}"]
        assert options.startswith(f"{address}(rw,") and ",fsid=" in options
        assert ",subtree_check," in options  # forged handles stay inside the layer
        assert f"/var/state/systems/{node}" not in exported  # only inside the view
    assert not any(ln.startswith("/ ") for ln in lines)  # never `/` itself
    assert [(str(b.source), str(b.target)) for b in plan.binds] == [
        (f"/var/state/systems/{n}", f"{view}/var/state/systems/{n}")
        for n in ("node01", "node02")]


def test_knfsd_exports_an_image_directory_as_is() -> None:
    """Without a view of `/`, at its real path; a directory of a bigger filesystem (here: no
    mount there at all), so `subtree_check`; the node layers too (issue 11 item 4: they were
    `no_subtree_check`, and a node forged handles into another node's layer)."""
    plan = nfs_plan(resolve_cluster(_inv("/srv/images/bookworm")), Paths(),
                    kind=NfsServerKind.KNFSD, mounts=ROOT_ONLY)
    assert plan.binds == ()
    assert "/srv/images/bookworm 10.0.0.0/24(ro,sync,no_root_squash,subtree_check," \
        "crossmnt,fsid=" in plan.text
    assert "/var/state/systems/node01 10.0.0.11(rw,sync,no_root_squash,subtree_check)" \
        in plan.text


def test_knfsd_server_union_beside_the_view_has_no_subtree_check() -> None:
    """A server-side union node of an image directory, while `/` is the view: its merged dir
    is bound in the view with a fixed fsid, but `no_subtree_check` (overlayfs makes no
    connectable handles: with `subtree_check` its files go stale once out of the cache)."""
    inv = make_inventory(nodes=[make_node(1), make_node(3, union="server", image="small")],
                         images=[Image(name="small", root=PurePosixPath("/srv/images/small"))])
    plan = nfs_plan(resolve_cluster(inv), Paths(), kind=NfsServerKind.KNFSD)
    view = "/var/lib/oneroot/views/default"
    exported = {ln.split()[0]: ln.split()[1] for ln in plan.text.splitlines()
                if ln and not ln.startswith("#")}
    union = exported[f"{view}/var/state/systems/node03/merged"]
    assert union.startswith("10.0.0.13(rw,") and ",no_subtree_check," in union
    assert ",fsid=" in union
    assert ",subtree_check," in exported[f"{view}/var/state/systems/node01"]


def _exported(text: str) -> dict[str, str]:
    return {ln.split()[0]: " ".join(ln.split()[1:]) for ln in text.splitlines()
            if ln and not ln.startswith("#")}


@pytest.mark.parametrize("root", ["/var/lib/oneroot/images/small", "/srv/images/small"])
def test_knfsd_binds_an_image_at_its_junction_in_the_view(root: str) -> None:
    """A client-mode node of an image that is not `/` mounts `server:<image root>` over
    NFSv4, which knfsd resolves inside the view (the NFSv4 root): the image is bound at its
    junction there and exported there, to the clients and with the options of its real
    path. Before, the image in HOME was only an empty junction (nothing bound) and the one
    in /srv had none, so node02 found no /sbin/init (docs/notes/2026-12-07-c/knfsd-view.md)."""
    inv = make_inventory(nodes=[make_node(1), make_node(2, image="small")],
                         images=[Image(name="small", root=PurePosixPath(root))])
    plan = nfs_plan(resolve_cluster(inv), Paths(home=Path("/var/lib/oneroot")),
                    kind=NfsServerKind.KNFSD, mounts=ROOT_ONLY)
    view = "/var/lib/oneroot/views/default"
    assert PurePosixPath(root.lstrip("/")) in plan.views["default"].junctions
    assert (Path(root), Path(view + root)) in [(b.source, b.target) for b in plan.binds]
    exported = _exported(plan.text)
    assert root not in exported  # at its junction only, as the node layers
    fsid = plan.export_ids["image:small"]
    # a directory of the server's `/`: subtree_check (test_knfsd_image_subtree_check_…)
    assert exported[view + root] == ("10.0.0.0/24(ro,sync,no_root_squash,subtree_check,"
                                     f"crossmnt,fsid={fsid})")


def test_knfsd_binds_versions_for_their_nodes_alone() -> None:
    """An image version (`HOME/images/NAME.versions/N`) goes to the nodes that boot or run
    it, at its junction as at its real path; the one nobody boots is not bound at all."""
    home = PurePosixPath("/var/lib/oneroot")
    lab = Image(name="lab", root=home / "images/lab", versions=tuple(
        ImageVersion(number=n, root=home / f"images/lab.versions/{n}", parent=n - 1)
        for n in (1, 2, 3)))
    inv = make_inventory(nodes=[make_node(1, image="lab@2"), make_node(2),
                                make_node(3, image="lab@3")], images=[lab])
    plan = nfs_plan(resolve_cluster(inv), Paths(home=Path(home)), kind=NfsServerKind.KNFSD,
                    running=())
    view = "/var/lib/oneroot/views/default"
    exported = _exported(plan.text)
    for n, client in ((2, "10.0.0.11"), (3, "10.0.0.13")):
        path = f"{home}/images/lab.versions/{n}"
        assert exported[view + path].startswith(f"{client}(ro,") and " " not in \
            exported[view + path]
        assert path not in exported
        assert JunctionBind(source=Path(path), target=Path(view + path)) in plan.binds
    assert not any("images/lab " in p or p.endswith("images/lab") for p in exported)
    assert not any(b.source == Path(home / "images/lab") for b in plan.binds)


def test_a_view_is_never_bound_into_itself() -> None:
    """The `/` image is the NFSv4 root, not a bind; with no view of `/` nothing is bound."""
    plan = nfs_plan(resolve_cluster(_inv()), Paths(), kind=NfsServerKind.KNFSD)
    assert all(b.source != Path("/") and "views/default" not in str(b.source)
               for b in plan.binds)
    inv = make_inventory(image_root="/srv/images/bookworm", nodes=[make_node(1, image="small")],
                         images=[Image(name="small", root=PurePosixPath("/srv/images/small"))])
    plan = nfs_plan(resolve_cluster(inv), Paths(), kind=NfsServerKind.KNFSD)
    assert plan.binds == () and "/srv/images/small 10.0.0.0/24(ro," in plan.text


def _knfsd_plan_on(mounts: list[MountEntry]) -> dict[str, str]:
    """The knfsd exports (path → clients and options), `/` the view, of images in HOME, on
    their own disk, in /srv, a bind of a subdirectory, and a version."""
    home = PurePosixPath("/var/lib/oneroot")
    lab = Image(name="lab", root=home / "images/lab", versions=tuple(
        ImageVersion(number=n, root=home / f"images/lab.versions/{n}", parent=n - 1)
        for n in (1, 2)))
    images = [lab, *(Image(name=n, root=PurePosixPath(r)) for n, r in (
        ("own", home / "images/own"), ("srv", "/srv/images/srv"),
        ("bound", "/srv/images/bound")))]
    nodes = [make_node(1, image="lab@2"), make_node(2, image="own"), make_node(3, image="srv"),
             make_node(4, image="bound")]
    plan = nfs_plan(resolve_cluster(make_inventory(nodes=nodes, images=images)),
                    Paths(home=Path(home)), kind=NfsServerKind.KNFSD, running=(), mounts=mounts)
    return _exported(plan.text)


def test_knfsd_image_subtree_check_unless_a_filesystem_of_its_own() -> None:
    """issue 11 item 4 for images: an image export on a bigger filesystem (the server's `/`)
    is `subtree_check`, else a node that may mount it forges a handle with its fsid and any
    inode/generation and reads /etc/shadow (tests/e2e/test_knfsd.py,
    test_forged_handles_through_an_image_dir_are_refused). Only an image that is a whole
    filesystem's mount point keeps `no_subtree_check`; a bind of a subdirectory is not one.
    Without a mount table entry for the image: subtree_check."""
    view = "/var/lib/oneroot/views/default"
    mounts = [*ROOT_ONLY,
              MountEntry(mount_point=Path("/var/lib/oneroot/images/own"), fstype="ext4",
                         source="/dev/vdb", options="ro"),
              MountEntry(mount_point=Path("/srv/images/bound"), fstype="ext4",
                         source="/dev/vda1", options="rw", root="/data/bound")]
    exported = _knfsd_plan_on(mounts)
    checked = {p.removeprefix(view) for p, o in exported.items() if ",subtree_check," in o}
    unchecked = {p.removeprefix(view) for p, o in exported.items()
                 if ",no_subtree_check," in o}
    assert checked >= {"/var/lib/oneroot/images/lab.versions/2", "/srv/images/srv",
                       "/srv/images/bound"}
    assert "/var/lib/oneroot/images/own" in unchecked
    # the view stays no_subtree_check (overlayfs); its defences are its own
    assert unchecked == {"/var/lib/oneroot/images/own", ""}
    for path, options in exported.items():
        if "images" in path:
            assert "ro,sync,no_root_squash," in options and ",crossmnt,fsid=" in options
    # The same disk no more mounted there (unmounted by hand): subtree_check again.
    assert ",subtree_check," in _knfsd_plan_on(ROOT_ONLY)[view + "/var/lib/oneroot/images/own"]


def test_knfsd_images_without_a_view_follow_the_same_rule() -> None:
    """Without a view of `/`, images are exported at their real paths; the same rule: a
    directory of a bigger filesystem is `subtree_check`, a filesystem's root is not."""
    inv = make_inventory(image_root="/srv/images/bookworm",
                         nodes=[make_node(1), make_node(2, image="own")],
                         images=[Image(name="own", root=PurePosixPath("/srv/images/own"))])
    mounts = [*ROOT_ONLY, MountEntry(mount_point=Path("/srv/images/own"), fstype="xfs",
                                     source="/dev/vdc", options="ro")]
    exported = _exported(nfs_plan(resolve_cluster(inv), Paths(), kind=NfsServerKind.KNFSD,
                                  mounts=mounts).text)
    assert ",subtree_check," in exported["/srv/images/bookworm"]
    assert ",no_subtree_check," in exported["/srv/images/own"]


# The state filesystem of `ops.statefs`: every node's and group's layer a directory of it.
STATEFS = [*ROOT_ONLY, MountEntry(mount_point=Path("/var/state"), fstype="ext4",
                                  source="/dev/loop0", options="rw,nosuid,nodev")]


def _layers_plan(mounts: list[MountEntry], image_root: str = "/srv/images/bookworm"
                 ) -> dict[str, str]:
    """knfsd's exports of node01 (client mode, in group `compute`), node02 (client mode),
    node03 (`union=server`) and the layer of group `compute`."""
    inv = make_inventory(image_root=image_root, groups=[layer_group("compute")], nodes=[
        make_node(1, groups=("default", "compute")), make_node(2),
        make_node(3, union="server")])
    return _exported(nfs_plan(resolve_cluster(inv), Paths(home=Path("/var/lib/oneroot")),
                              kind=NfsServerKind.KNFSD, running=(), mounts=mounts).text)


def test_knfsd_layers_without_a_view_are_subtree_check() -> None:
    """issue 11 item 4 without a view of `/` (images oneroot made, the state dir on its own
    filesystem): node and group layers are exported at their real paths, all on the state
    filesystem. `no_subtree_check` there let root on node02 forge a handle with its own
    export's fsid and node01's layer's inode, and read and write node01's layer (e2e:
    test_forged_handles_into_another_layer_are_refused). A server-side union stays
    `no_subtree_check` (overlayfs, its own fsid)."""
    exported = _layers_plan(STATEFS)
    for path in ("/var/state/systems/node01", "/var/state/systems/node02"):
        assert exported[path].endswith("(rw,sync,no_root_squash,subtree_check)"), path
    group = exported["/var/state/groups/compute"]
    assert group == "10.0.0.11(ro,sync,root_squash,subtree_check)"
    union = exported["/var/state/systems/node03/merged"]
    assert ",no_subtree_check," in union and ",fsid=" in union


def test_knfsd_a_layer_of_its_own_filesystem_keeps_no_subtree_check() -> None:
    """A layer that is a whole filesystem (a disk mounted at it): all a handle can name is
    that layer. A bind of a subdirectory of the state filesystem looks like a mount point
    but is not one (its mountinfo root is not `/`)."""
    mounts = [*STATEFS,
              MountEntry(mount_point=Path("/var/state/systems/node01"), fstype="ext4",
                         source="/dev/vdc", options="rw"),
              MountEntry(mount_point=Path("/var/state/groups/compute"), fstype="ext4",
                         source="/dev/loop0", options="rw", root="/elsewhere/compute")]
    exported = _layers_plan(mounts)
    assert exported["/var/state/systems/node01"].endswith(",no_subtree_check)")
    assert exported["/var/state/systems/node02"].endswith(",subtree_check)")
    assert exported["/var/state/groups/compute"].endswith(",subtree_check)")


def test_knfsd_layers_in_the_view_follow_the_same_rule() -> None:
    """With the view of `/`, the layers are bound at their junctions and exported there with
    a fixed fsid; whether they are `subtree_check` is decided on their real paths."""
    view = "/var/lib/oneroot/views/default"
    inv = make_inventory(groups=[layer_group("compute")],
                         nodes=[make_node(1, groups=("default", "compute")), make_node(2)])
    mounts = [*STATEFS, MountEntry(mount_point=Path("/var/state/systems/node02"),
                                   fstype="ext4", source="/dev/vdc", options="rw")]
    exported = _exported(nfs_plan(resolve_cluster(inv), Paths(home=Path("/var/lib/oneroot")),
                                  kind=NfsServerKind.KNFSD, running=(), mounts=mounts).text)
    assert ",subtree_check,fsid=" in exported[f"{view}/var/state/systems/node01"]
    assert ",subtree_check,fsid=" in exported[f"{view}/var/state/groups/compute"]
    assert ",no_subtree_check,fsid=" in exported[f"{view}/var/state/systems/node02"]
