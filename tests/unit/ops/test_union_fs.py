"""Server-side unions under knfsd: each layer a filesystem holding only what its node may read
(`ops.union_fs`). The forged handles themselves: tests/e2e/test_knfsd.py."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from oneroot.model import Image, NfsServerKind, Settings
from oneroot.model.cluster import LayerFs
from oneroot.model.inventory import Inventory
from oneroot.model.paths import Paths
from oneroot.model.resolved import resolve_cluster
from oneroot.nfs.server_union import UnionUnsupported
from oneroot.nfs.view import MountEntry, read_mounts
from oneroot.ops.doctor import Level
from oneroot.ops.doctor_server import check_union_filesystems
from oneroot.ops.nfs_serving import nfs_plan
from oneroot.ops.server_union import node_union_spec
from oneroot.ops.union_fs import owns_layer_fs, union_groups, union_layer_problems
from oneroot.testing.inventory import layer_group, make_inventory, make_node
from oneroot.testing.mounts import disks_at

HOME = Path("/var/lib/oneroot")


def _inv(image: str = "/srv/images/small", kind: NfsServerKind = NfsServerKind.KNFSD
         ) -> Inventory:
    """node01 `union=server` in group layer `compute`, node02 client mode in `tools`."""
    small = Image(name="small", root=PurePosixPath(image))
    return make_inventory(
        nodes=[make_node(1, union="server", image="small", groups=("default", "compute")),
               make_node(2, groups=("default", "tools"))],
        groups=[layer_group("compute"), layer_group("tools")], images=[small],
        settings=Settings(nfs_server=kind), image_root="/srv/images/bookworm")


def _disk(path: str | Path) -> MountEntry:
    return MountEntry(mount_point=Path(path), fstype="ext4", source="/dev/vdz", options="rw",
                      root="/")


def test_with_knfsd_a_union_nodes_layers_are_filesystems_of_their_own() -> None:
    cluster = resolve_cluster(_inv())
    knfsd, ganesha = Settings(nfs_server=NfsServerKind.KNFSD), Settings()
    assert owns_layer_fs(knfsd, union=True) and not owns_layer_fs(knfsd, union=False)
    assert owns_layer_fs(ganesha, union=False)  # layer_fs=own: every layer already
    shared = Settings(layer_fs=LayerFs.SHARED)
    assert not owns_layer_fs(shared, union=True)  # ganesha's own choice (doctor: error)
    assert union_groups(cluster) == {"compute"}  # not node02's `tools`


def test_render_refuses_a_union_over_an_image_dir_of_a_shared_filesystem() -> None:
    """The image is on the server's `/`: a lower handle of /etc/shadow with that
    filesystem's UUID would be read through the union. oneroot cannot move an image."""
    with pytest.raises(UnionUnsupported, match="its layer /srv/images/small") as info:
        nfs_plan(resolve_cluster(_inv()), Paths(home=HOME))
    assert "forged file handle" in str(info.value)
    assert info.value.hint is not None and "filesystem of its own" in info.value.hint
    # nfs-ganesha: its FSAL checks the filesystem (layer_fs=own, ops.imagefs)
    nfs_plan(resolve_cluster(_inv(kind=NfsServerKind.GANESHA)), Paths(home=HOME))


def test_an_image_on_a_disk_of_its_own_or_in_the_images_filesystem_is_served(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The node's own layer and its group layer are not yet filesystems of their own when
    render runs: `nfs apply` makes them (render = apply: both only refuse what apply cannot
    fix)."""
    disks_at(monkeypatch, "/srv/images/small")
    plan = nfs_plan(resolve_cluster(_inv()), Paths(home=HOME))
    assert "/var/state/systems/node01/merged" in plan.text
    monkeypatch.undo()
    disks_at(monkeypatch, HOME / "images")
    nfs_plan(resolve_cluster(_inv(str(HOME / "images/small"))), Paths(home=HOME))


def test_apply_checks_every_layer_after_making_them() -> None:
    cluster = resolve_cluster(_inv())
    spec = node_union_spec(cluster, "node01")
    mounts = [*read_mounts(), _disk("/srv/images/small")]
    problems = union_layer_problems(cluster, Paths(home=HOME), spec, mounts, fixable=True)
    assert problems == ["its layer /var/state/systems/node01 (on the filesystem at /)",
                        "its layer /var/state/groups/compute (on the filesystem at /)"]
    made = [*mounts, _disk("/var/state/systems/node01"), _disk("/var/state/groups/compute")]
    assert union_layer_problems(cluster, Paths(home=HOME), spec, made, fixable=True) == []


def test_doctor_reports_a_union_layer_on_a_shared_filesystem(tmp_path: Path) -> None:
    state = tmp_path / "systems"
    (state / "node01").mkdir(parents=True)
    inv = _inv()
    inv = Inventory(settings=Settings(nfs_server=NfsServerKind.KNFSD,
                                      state_dir=PurePosixPath(state),
                                      group_dir=PurePosixPath(tmp_path / "groups")),
                    nodes=inv.nodes, groups=inv.groups, images=inv.images)
    cluster = resolve_cluster(inv)
    mounts = [*read_mounts(), _disk("/srv/images/small")]
    [finding] = check_union_filesystems(cluster, Paths(home=HOME), mounts)
    assert finding.level is Level.ERROR and finding.check == "union-fs"
    assert f"its layer {state / 'node01'}" in finding.message
    assert "`oneroot nfs apply`" in finding.fix
    made = [*mounts, _disk(state / "node01"), _disk(tmp_path / "groups/compute")]
    [finding] = check_union_filesystems(cluster, Paths(home=HOME), made)
    assert finding.level is Level.OK
