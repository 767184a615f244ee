"""The server-side union's spec (layers, options, paths), its refusals, and what a
`union=server` node boots and is exported: one rw NFS root, its merged dir, to it alone."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from oneroot.errors import ConfigError
from oneroot.model import Image, NfsServerKind, Settings
from oneroot.model.inventory import Inventory
from oneroot.model.paths import Paths
from oneroot.model.resolved import resolve_cluster
from oneroot.nfs.server_union import (
    UNION_OPTIONS,
    UnionSpec,
    UnionUnsupported,
    mounted_lowers,
    union_spec,
)
from oneroot.nfs.view import MountEntry
from oneroot.ops.boot import root_spec_text
from oneroot.ops.catalog import BootCatalog
from oneroot.ops.exportids import catalog_for, load_export_ids
from oneroot.ops.nfs_serving import nfs_plan, rendered_configs
from oneroot.ops.rendertree import render_tree
from oneroot.ops.server_union import node_union_spec
from oneroot.testing.ganesha import exports as ganesha_exports
from oneroot.testing.inventory import layer_group, make_inventory, make_node
from oneroot.testing.mounts import disks_at

STATE = Path("/var/state/systems")


def _inv(image_root: str = "/srv/images/bookworm", *, node01: dict[str, str] | None = None,
         node01_groups: tuple[str, ...] = ("default", "compute"),
         extra_images: dict[str, str] | None = None) -> Inventory:
    nodes = [make_node(1, groups=node01_groups, **{"union": "server", **(node01 or {})}),
             make_node(2, **({"image": "host"} if extra_images else {}))]
    images = [Image(name=name, root=PurePosixPath(root))
              for name, root in (extra_images or {}).items()]
    return make_inventory(nodes=nodes, groups=[layer_group("compute"), layer_group("gpu")],
                          settings=Settings(nfs_server=NfsServerKind.GANESHA),
                          image_root=image_root, images=images)


def test_spec_layers_topmost_first_and_options() -> None:
    inv = _inv(node01_groups=("default", "compute", "gpu"))
    spec = node_union_spec(resolve_cluster(inv), "node01")
    assert spec.lowers == (Path("/var/state/groups/gpu"), Path("/var/state/groups/compute"),
                           Path("/srv/images/bookworm"))
    assert spec.upper == STATE / "node01/upper" and spec.work == STATE / "node01/work"
    assert spec.mountpoint == STATE / "node01/merged"
    assert spec.options == (
        "lowerdir=/var/state/groups/gpu:/var/state/groups/compute:/srv/images/bookworm,"
        "upperdir=/var/state/systems/node01/upper,workdir=/var/state/systems/node01/work,"
        "index=on,nfs_export=on,xino=on")
    assert "index=on" in UNION_OPTIONS and "nfs_export=on" in UNION_OPTIONS
    assert resolve_cluster(inv).union_nodes() == ["node01"]


def test_extra_layers_on_this_server_sit_between_image_and_groups(tmp_path: Path) -> None:
    layer = tmp_path / "site"
    (layer / "upper").mkdir(parents=True)
    (layer / "work").mkdir()  # a diff-overlay dir used as a layer shows its upper/
    inv = _inv(node01={"extra_layers": (f"10.0.0.1:{layer}",)})
    assert node_union_spec(resolve_cluster(inv), "node01").lowers == (
        Path("/var/state/groups/compute"), layer / "upper", Path("/srv/images/bookworm"))


def test_extra_layer_on_another_server_is_refused() -> None:
    inv = _inv(node01={"extra_layers": ("10.9.9.9:/srv/site",)})
    with pytest.raises(UnionUnsupported, match="another server"):
        node_union_spec(resolve_cluster(inv), "node01")


def test_refused_over_the_live_root() -> None:
    with pytest.raises(UnionUnsupported, match="live `/`") as info:
        node_union_spec(resolve_cluster(_inv("/")), "node01")
    assert info.value.hint is not None and "union=client" in info.value.hint
    with pytest.raises(UnionUnsupported):  # nfs apply says so before touching anything
        nfs_plan(resolve_cluster(_inv("/")), Paths())


def test_refused_over_an_image_holding_the_state_dir() -> None:
    with pytest.raises(UnionUnsupported, match="holds the state"):
        node_union_spec(resolve_cluster(_inv("/var")), "node01")


@pytest.mark.parametrize("bad", ["/srv/a,b", "/srv/a:b", "relative/dir"])
def test_spec_paths_overlayfs_cannot_take(bad: str) -> None:
    with pytest.raises(ConfigError):
        union_spec("n", lowers=[Path(bad)], node_dir=STATE / "n")


def test_spec_dirs_share_the_node_dir() -> None:
    with pytest.raises(ConfigError, match="share"):
        UnionSpec(node="n", lowers=(Path("/srv/i"),), upper=STATE / "n/upper",
                  work=STATE / "n/work", mountpoint=Path("/mnt/x")).check()


def test_root_is_one_plain_rw_nfs_layer() -> None:
    cluster = resolve_cluster(_inv())
    r = cluster.node("node01")
    assert root_spec_text(cluster, r) == "10.0.0.1:/var/state/systems/node01/merged:rw"
    eph = resolve_cluster(_inv(node01={"ephemeral": True}))
    assert root_spec_text(eph, eph.node("node01")) == (
        "10.0.0.1:/var/state/systems/node01/merged:ro;tmpfs")
    r2 = cluster.node("node02")  # client mode: the seed's line
    assert root_spec_text(cluster, r2).endswith(";10.0.0.1:/var/state/systems/node02;rw")


def test_merged_dir_exported_rw_to_the_node_alone_and_raw_dir_not_at_all() -> None:
    plan = nfs_plan(resolve_cluster(_inv()), Paths())
    exports = ganesha_exports(plan.text)
    assert exports["/var/state/systems/node01/merged"] == (
        "/var/state/systems/node01/merged", "10.0.0.11")
    assert "/var/state/systems/node01" not in exports
    assert exports["/var/state/systems/node02"][1] == "10.0.0.12"  # client mode unchanged
    assert set(plan.unions) == {"node01"}
    ctx = BootCatalog(resolve_cluster(_inv())).cluster_context()
    assert {n.name: str(n.export_path) for n in ctx.nodes} == {
        "node01": "/var/state/systems/node01/merged", "node02": "/var/state/systems/node02"}


def test_unexported_nodes_are_left_out_while_remounted() -> None:
    plan = nfs_plan(resolve_cluster(_inv()), Paths(), unexported=("node01",))
    exports = ganesha_exports(plan.text)
    assert not any("node01" in p for p in exports)
    assert "/var/state/systems/node02" in exports


def test_view_of_a_live_root_gets_the_merged_junction() -> None:
    """node02 boots the server's `/` (client mode, masked view); node01's merged export sits
    below it, so the view has a junction at its merged dir (knfsd)..."""
    plan = nfs_plan(resolve_cluster(_inv(extra_images={"host": "/"})),
                    Paths(home=Path("/var/lib/oneroot")), kind=NfsServerKind.KNFSD)
    junctions = plan.views["host"].junctions
    assert PurePosixPath("var/state/systems/node01/merged") in junctions
    assert PurePosixPath("var/state/systems/node02") in junctions


def test_ganesha_refuses_a_union_nested_in_a_view() -> None:
    """...but nfs-ganesha 4.3 crashes unexporting a nested export, which a remount does."""
    with pytest.raises(UnionUnsupported, match="inside the masked view") as info:
        nfs_plan(resolve_cluster(_inv(extra_images={"host": "/"})),
                 Paths(home=Path("/var/lib/oneroot")))
    assert info.value.hint is not None and "union=client" in info.value.hint


def _knfsd_options(text: str) -> dict[str, str]:
    """Path -> its (first) client's options, from a rendered exports file."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            path, first = line.split(" ")[:2]
            out[path] = first[first.index("(") + 1:-1]
    return out


def _union_inv(*union: str, extra: str | None = None) -> Inventory:
    """node01 and node02 (and `extra`), the named ones `union=server`, served by knfsd."""
    names = ("node01", "node02", *((extra,) if extra else ()))
    nodes = [make_node(i, name=name, **({"union": "server"} if name in union else {}))
             for i, name in enumerate(names, start=1)]
    return make_inventory(nodes=nodes, settings=Settings(nfs_server=NfsServerKind.KNFSD),
                          image_root="/srv/images/bookworm")


@pytest.fixture
def bookworm_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    disks_at(monkeypatch, "/srv/images/bookworm")


@pytest.mark.usefixtures("bookworm_disk")
def test_knfsd_exports_the_merged_dir_with_its_export_id_as_fsid(tmp_path: Path) -> None:
    """An overlayfs mount has no UUID for knfsd to derive a filesystem id from."""
    plan = nfs_plan(resolve_cluster(_union_inv("node01")), Paths(home=tmp_path))
    options = _knfsd_options(plan.text)
    fsid = plan.export_ids["node:node01"]
    assert options["/var/state/systems/node01/merged"] == (
        f"rw,sync,no_root_squash,no_subtree_check,fsid={fsid}")
    # A client-mode node's plain directory: as before, knfsd derives its id itself; not a
    # filesystem of its own, so subtree_check (ops.knfsd_layout.check_subtrees).
    assert options["/var/state/systems/node02"] == "rw,sync,no_root_squash,subtree_check"
    assert options["/srv/images/bookworm"].endswith(
        f",crossmnt,fsid={plan.export_ids['image:default']}")


@pytest.mark.usefixtures("bookworm_disk")
def test_fsids_are_the_persisted_export_ids_for_life(tmp_path: Path) -> None:
    paths = Paths(home=tmp_path)
    paths.export_ids.write_text('{"image:default": 7, "node:node01": 4242}\n')
    before = paths.export_ids.read_text()
    plan = nfs_plan(resolve_cluster(_union_inv("node01")), paths)
    assert "fsid=4242" in _knfsd_options(plan.text)["/var/state/systems/node01/merged"]
    assert nfs_plan(resolve_cluster(_union_inv("node01")), paths).text == plan.text
    assert paths.export_ids.read_text() == before  # planning never writes
    # Nodes come and go: node01's id stays.
    other = nfs_plan(resolve_cluster(_union_inv("node01", "node03", extra="node03")), paths)
    assert "fsid=4242" in _knfsd_options(other.text)["/var/state/systems/node01/merged"]
    assert other.export_ids["node:node03"] not in (7, 4242)


@pytest.mark.usefixtures("bookworm_disk")
def test_fsids_are_unique_across_union_nodes(tmp_path: Path) -> None:
    plan = nfs_plan(resolve_cluster(_union_inv("node01", "node02")), Paths(home=tmp_path))
    fsids = {path: int(opts.rpartition("fsid=")[2])
             for path, opts in _knfsd_options(plan.text).items()}
    assert fsids == {"/srv/images/bookworm": plan.export_ids["image:default"],
                     "/var/state/systems/node01/merged": plan.export_ids["node:node01"],
                     "/var/state/systems/node02/merged": plan.export_ids["node:node02"]}
    assert len(set(fsids.values())) == 3 and 0 not in fsids.values()


@pytest.mark.usefixtures("bookworm_disk")
def test_render_and_nfs_apply_write_the_sameexports(tmp_path: Path) -> None:
    """`oneroot render` and `oneroot nfs apply` give an export the same (persisted) id."""
    paths = Paths(home=tmp_path / "home")
    paths.home.mkdir()
    paths.export_ids.write_text('{"node:node01": 4242}\n')
    inv = _union_inv("node01")
    cluster = resolve_cluster(inv)
    render_tree(catalog_for(paths, cluster), tmp_path / "boot", tmp_path / "cfg",
                nfs_configs={f: p.text for f, p in rendered_configs(cluster, paths).items()})
    plan = nfs_plan(resolve_cluster(inv), paths)
    assert (tmp_path / "cfg" / "exports").read_text() == plan.text
    assert "fsid=4242" in plan.text
    assert load_export_ids(paths) == plan.export_ids  # render saved the new ones


def test_mounted_lowers_read_back_from_mountinfo() -> None:
    entry = MountEntry(mount_point=STATE / "n/merged", fstype="overlay", source="x",
                       options="rw,lowerdir=/a:/b,upperdir=/u,workdir=/w,index=on")
    assert mounted_lowers(entry) == (Path("/a"), Path("/b"))
