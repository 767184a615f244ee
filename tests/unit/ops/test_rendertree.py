"""`oneroot render`: atomic files, only changed files rewritten, removed nodes' files removed."""

from __future__ import annotations

import dataclasses
from pathlib import Path, PurePosixPath

import pytest

from oneroot.errors import ConfigError
from oneroot.inventory import database
from oneroot.inventory.events import EventStore
from oneroot.model import Image, NfsServerKind, Settings
from oneroot.model.cluster import InitSystem, Runlevel
from oneroot.model.events import BOOT_IMAGE, BootEvent
from oneroot.model.imageversion import ImageVersion
from oneroot.model.inventory import Inventory
from oneroot.model.paths import Paths
from oneroot.model.resolved import resolve_cluster
from oneroot.nfs.server_union import UnionUnsupported
from oneroot.ops.catalog import BootCatalog, assign_export_ids
from oneroot.ops.exportids import catalog_for
from oneroot.ops.nfs_serving import apply_nfs, nfs_plan, rendered_configs
from oneroot.ops.rendertree import RenderReport, render_tree
from oneroot.render.cluster import render_exports
from oneroot.testing.inventory import make_inventory, make_node, settings_under
from oneroot.testing.mounts import disks_at


def render(inv: Inventory, tmp: Path) -> RenderReport:
    """`oneroot render` of `inv` with the home `tmp/home`, into `tmp/boot` and `tmp/cfg`."""
    paths = Paths(home=tmp / "home")
    cluster = resolve_cluster(inv)
    catalog = catalog_for(paths, cluster)
    return render_tree(catalog, tmp / "boot", tmp / "cfg",
                       nfs_configs={f: p.text for f, p in rendered_configs(cluster, paths).items()})


def inventory(count: int = 3) -> Inventory:
    return make_inventory(nodes=count, init_system=InitSystem.SYSTEMD,
                          runlevels=[Runlevel(name="computenode")])


def test_seed_line_and_exports(tmp_path: Path) -> None:
    report = render(inventory(1), tmp_path)
    view = tmp_path / "home" / "views" / "default"
    assert len(report.written) == 7
    pxe = (tmp_path / "boot/pxelinux.cfg/01-52-54-00-00-00-01").read_text()
    assert "root=10.0.0.1:/:ro;10.0.0.1:/var/state/systems/node01;rw " in pxe
    exports = (tmp_path / "cfg/exports").read_text()
    # the seed's `/` goes out as its masked view, squashed, only while mounted
    assert f"\n{view} 10.0.0.0/24(ro,sync,all_squash,anonuid=65534,anongid=65534," in exports
    assert "\n/ " not in exports and "apply with `exportfs -ra`" not in exports
    ganesha = (tmp_path / "cfg/ganesha.conf").read_text()
    assert f'Path = "{view}";\n    Pseudo = "/";' in ganesha
    assert 'Path = "/";' not in ganesha
    # knfsd: the node's layer is bound at its junction in the view (as `nfs apply` does it)
    assert f"\n{view}/var/state/systems/node01 10.0.0.11(rw,sync,no_root_squash," in exports


def test_only_changed_files_are_rendered_and_written(tmp_path: Path) -> None:
    inv = inventory(3)
    render(inv, tmp_path)
    again = render(inv, tmp_path)
    assert (again.rendered, again.written) == (0, [])
    changed = inv.with_nodes([dataclasses.replace(inv.nodes["node02"],
                                                  overrides={"runlevel": "computenode"})])
    report = render(changed, tmp_path)
    assert report.rendered == 3
    assert all("node02" in p or "00-00-02" in p for p in report.written)
    assert "systemd.unit=computenode.target" in (tmp_path / "boot/node02.ipxe").read_text()


def test_hand_edited_file_is_restored(tmp_path: Path) -> None:
    inv = inventory(1)
    render(inv, tmp_path)
    target = tmp_path / "boot/node01.ipxe"
    original = target.read_text()
    target.write_text("#!ipxe\nshell\n")
    report = render(inv, tmp_path)
    assert str(target) in report.written
    assert target.read_text() == original


def test_files_of_a_removed_node_go(tmp_path: Path) -> None:
    inv = inventory(2)
    render(inv, tmp_path)
    smaller = inv.replace(nodes={"node01": inv.nodes["node01"]})
    report = render(smaller, tmp_path)
    assert not (tmp_path / "boot/node02.ipxe").exists()
    assert len(report.removed) == 3
    assert not list((tmp_path / "boot").rglob(".*.tmp"))


def test_export_ids_are_kept_for_life() -> None:
    first = assign_export_ids(["node:a", "node:b"], {})
    second = assign_export_ids(["node:a", "node:b", "node:c"], first)
    assert {k: second[k] for k in first} == first
    assert len(set(second.values())) == 3
    many = assign_export_ids([f"node:n{i}" for i in range(5000)], {})
    assert len(set(many.values())) == 5000
    # A removed node's id is not reused while it is remembered.
    third = assign_export_ids(["node:a", "node:c"], {**second, "node:b": second["node:b"]})
    assert second["node:b"] not in third.values()


def test_render_refuses_to_write_an_unmasked_live_root(tmp_path: Path) -> None:
    """Without the image's view, `/` would be written into exports: nothing is written."""
    catalog = BootCatalog(resolve_cluster(inventory(1)))
    with pytest.raises(ConfigError, match="live root"):
        render_tree(catalog, tmp_path / "boot", tmp_path / "cfg",
                    nfs_configs={"exports": render_exports(catalog.cluster_context())})
    assert not (tmp_path / "cfg" / "exports").exists()
    assert not (tmp_path / "cfg" / "ganesha.conf").exists()


def _versions_inventory(tmp: Path, kind: NfsServerKind) -> Inventory:
    """node01 runs lab@2 (its last boot) and boots lab@3 next; node02 runs nothing yet."""
    lab = Image(name="lab", root=PurePosixPath(tmp / "lab"), versions=tuple(
        ImageVersion(number=n, root=PurePosixPath(tmp / f"lab.versions/{n}"), parent=n - 1)
        for n in (1, 2, 3)))
    return make_inventory(nodes=[make_node(1, image="lab@3"), make_node(2)], images=[lab],
                          image_root=tmp / "image",
                          settings=settings_under(tmp, nfs_server=kind))


@pytest.mark.parametrize("kind", [NfsServerKind.KNFSD, NfsServerKind.GANESHA])
def test_rendered_nfs_config_is_what_nfs_apply_and_serve_apply(tmp_path: Path,
                                                               kind: NfsServerKind) -> None:
    """`oneroot render` writes the NFS server's config as `nfs apply` (and serve, which runs
    it) applies it, to the byte: a version a node still runs goes to that node only, not to
    the subnet (render passed the running versions by name only, and wrote the subnet)."""
    inv = _versions_inventory(tmp_path, kind)
    paths = Paths(home=tmp_path / "home")
    paths.home.mkdir()
    events = EventStore(database.locate(paths, paths.events_db))
    try:
        events.record([BootEvent(time=1.0, kind=BOOT_IMAGE, node="node01",
                                 detail={"image": "lab@2"})])
    finally:
        events.close()
    render(inv, tmp_path)
    applied = apply_nfs(resolve_cluster(inv), paths, exportfs="true",
                        exports_file=tmp_path / "exports")
    file = "exports" if kind is NfsServerKind.KNFSD else "ganesha.conf"
    rendered = (tmp_path / "cfg" / file).read_text()
    assert rendered == applied.config_path.read_text() == applied.plan.text
    if kind is NfsServerKind.GANESHA:  # what serve starts ganesha with
        assert rendered == nfs_plan(resolve_cluster(inv), paths, kind=kind,
                                    bind=inv.settings.server_address).text
    running = [line for line in rendered.splitlines() if "lab.versions/2" in line]
    assert running, rendered
    if kind is NfsServerKind.KNFSD:
        assert running[0].split()[1].startswith("10.0.0.11("), running
        assert "10.0.0.0/24" not in running[0]


@pytest.mark.parametrize("kind", [NfsServerKind.KNFSD, NfsServerKind.GANESHA])
def test_a_config_the_other_server_would_refuse_is_left_out(
        tmp_path: Path, kind: NfsServerKind, monkeypatch: pytest.MonkeyPatch) -> None:
    """A union=server node below the seed's masked view: knfsd serves it, ganesha refuses it
    (it crashes unexporting a nested export). Under knfsd, render writes the exports and
    leaves out a ganesha.conf nobody could run; under ganesha, render refuses as apply does."""
    small = Image(name="small", root=PurePosixPath("/srv/images/small"))
    inv = make_inventory(nodes=[make_node(1, union="server", image="small"), make_node(2)],
                         images=[small], settings=Settings(nfs_server=kind))
    if kind is NfsServerKind.GANESHA:
        with pytest.raises(UnionUnsupported, match="inside the masked view"):
            render(inv, tmp_path)
        return
    disks_at(monkeypatch, "/srv/images/small")  # knfsd: a union's image, a disk of its own
    render(inv, tmp_path)
    assert (tmp_path / "cfg" / "exports").exists()
    assert not (tmp_path / "cfg" / "ganesha.conf").exists()


def test_render_under_ganesha_ceph_writes_the_cephfs_config(tmp_path: Path) -> None:
    """The ganesha.conf render writes is the one serve starts ganesha-ceph with (FSAL CEPH
    exports of CephFS paths), not a ganesha-VFS config of the same paths."""
    ceph = PurePosixPath("/mnt/cephfs")
    inv = make_inventory(nodes=2, image_root=ceph / "images/x", settings=Settings(
        nfs_server=NfsServerKind.GANESHA_CEPH, cephfs_mount=ceph, state_dir=ceph / "state",
        group_dir=ceph / "groups"))
    render(inv, tmp_path)
    rendered = (tmp_path / "cfg" / "ganesha.conf").read_text()
    served = nfs_plan(resolve_cluster(inv), Paths(home=tmp_path / "home"),
                      kind=NfsServerKind.GANESHA_CEPH)
    assert rendered == served.text and "CEPH" in rendered


def test_render_binds_images_in_the_knfsd_view_as_nfs_apply_does(tmp_path: Path) -> None:
    """knfsd with the seed's `/`: `oneroot render` writes each image and version at its
    junction in the view, to the same clients as its real path had (node01 alone for the
    version it boots, the subnet for an image's version 1), never at its real path: the
    exports `nfs apply` applies after binding them there (the same plan)."""
    home = tmp_path / "home"
    lab = Image(name="lab", root=PurePosixPath(home / "images/lab"), versions=tuple(
        ImageVersion(number=n, root=PurePosixPath(home / f"images/lab.versions/{n}"),
                     parent=n - 1) for n in (1, 2)))
    small = Image(name="small", root=PurePosixPath("/srv/images/small"))
    inv = make_inventory(nodes=[make_node(1, image="lab@2"), make_node(2, image="lab@1"),
                                make_node(3, image="small")], images=[lab, small],
                         settings=Settings(nfs_server=NfsServerKind.KNFSD))
    render(inv, tmp_path)
    rendered = (tmp_path / "cfg" / "exports").read_text()
    plan = nfs_plan(resolve_cluster(inv), Paths(home=home))
    assert rendered == plan.text
    view = home / "views" / "default"
    lines = {ln.split()[0]: ln.split()[1] for ln in rendered.splitlines()
             if ln and not ln.startswith("#")}
    for path, client in ((home / "images/lab.versions/2", "10.0.0.11("),
                         (home / "images/lab.versions/1", "10.0.0.0/24("),
                         (Path("/srv/images/small"), "10.0.0.0/24(")):
        junction = f"{view}{path}"
        assert lines[junction].startswith(client + "ro,"), (junction, rendered)
        assert str(path) not in lines
        assert (path, Path(junction)) in [(b.source, b.target) for b in plan.binds]


def test_ganesha_ceph_refuses_a_server_side_union_with_the_measured_reason(
        tmp_path: Path) -> None:
    """A union=server node on ganesha-ceph is refused before anything is written: the kernel
    refuses a CephFS upper (tests/e2e/test_ceph_union_vm.py measures it in a VM)."""
    ceph = PurePosixPath("/mnt/cephfs")
    inv = make_inventory(nodes=2, image_root=ceph / "images/x", settings=Settings(
        nfs_server=NfsServerKind.GANESHA_CEPH, cephfs_mount=ceph, state_dir=ceph / "state",
        group_dir=ceph / "groups"))
    inv = inv.with_nodes([make_node(2, union="server")])
    with pytest.raises(UnionUnsupported, match="overlayfs refuses a CephFS upper") as err:
        render(inv, tmp_path)
    assert "node02" in err.value.message and "RENAME_WHITEOUT" in err.value.message
    assert "union=client" in (err.value.hint or "")
    assert not (tmp_path / "cfg" / "ganesha.conf").exists()


@pytest.mark.parametrize("kind", [NfsServerKind.GANESHA_CEPH, NfsServerKind.KNFSD])
def test_ganesha_ceph_nodes_read_their_lower_layers_without_xattrs(
        kind: NfsServerKind) -> None:
    """On ganesha-ceph every node's command line asks the initramfs for xattr-less lower
    layers (FSAL_CEPH lists an NFSv4 ACL it cannot return, and copy-up would fail on it:
    tests/e2e/test_ceph_union_vm.py), before the profile's kernel_args (which may override
    it); knfsd's nodes are left as they were."""
    ceph = PurePosixPath("/mnt/cephfs")
    settings = (Settings(nfs_server=kind, cephfs_mount=ceph, state_dir=ceph / "state",
                         group_dir=ceph / "groups") if kind is NfsServerKind.GANESHA_CEPH
                else Settings(nfs_server=kind))
    inv = make_inventory(nodes=[make_node(1, kernel_args=("quiet",))], settings=settings,
                         image_root=ceph / "images/x")
    args = BootCatalog(resolve_cluster(inv)).node_context("node01").kernel_args
    if kind is NfsServerKind.GANESHA_CEPH:
        assert args == ("oneroot.union.lowerxattrs=off", "quiet")
    else:
        assert args == ("quiet",)
