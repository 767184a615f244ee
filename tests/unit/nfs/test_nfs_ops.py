"""`nfs_plan`: the ganesha config exports the server's `/` from its masked view at Pseudo `/`,
each node's dir at its real path to that node alone; knfsd gets the view's own path."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from oneroot.model import Image, NfsServerKind
from oneroot.model.inventory import Inventory
from oneroot.model.paths import Paths
from oneroot.model.resolved import resolve_cluster
from oneroot.ops.nfs_serving import nfs_plan
from oneroot.testing.ganesha import exports as ganesha_exports
from oneroot.testing.inventory import make_inventory, make_node


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
    plan = nfs_plan(resolve_cluster(_inv("/srv/images/bookworm")), Paths(),
                    kind=NfsServerKind.KNFSD)
    assert plan.binds == ()
    assert "/srv/images/bookworm 10.0.0.0/24(ro,sync,no_root_squash,no_subtree_check," \
        "crossmnt,fsid=" in plan.text
    assert "/var/state/systems/node01 10.0.0.11(rw,sync,no_root_squash,no_subtree_check)" \
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
