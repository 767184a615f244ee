"""Which knfsd image and layer exports are `subtree_check`, decided on the real mount table
(`ops.knfsd_layout.check_subtrees` through `nfs_plan`, as `oneroot render` and `nfs apply`
make it): a tmpfs mounted at an image's directory keeps `no_subtree_check`; a plain directory
and a bind of a subdirectory (its mountinfo root is not `/`) are `subtree_check`. No NFS
server; needs root (mounts)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from oneroot.model import Image, NfsServerKind
from oneroot.model.paths import Paths
from oneroot.model.resolved import resolve_cluster
from oneroot.nfs.view import is_filesystem_root, read_mounts
from oneroot.ops.nfs_serving import nfs_plan, rendered_configs
from oneroot.testing.inventory import layer_group, make_inventory, make_node, settings_under

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts)"),
]


@pytest.fixture
def images(tmp_path: Path) -> Iterator[Path]:
    """`own` a tmpfs of its own, `plain` a directory, `bound` a bind of a subdirectory."""
    for name in ("own", "plain", "bound", "data/sub"):
        (tmp_path / name).mkdir(parents=True)
    mounted = []
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(tmp_path / "own")],
                       check=True)
        mounted.append(tmp_path / "own")
        subprocess.run(["mount", "--bind", str(tmp_path / "data/sub"), str(tmp_path / "bound")],
                       check=True)
        mounted.append(tmp_path / "bound")
        yield tmp_path
    finally:
        for path in reversed(mounted):
            subprocess.run(["umount", str(path)], check=True)


def test_an_image_of_its_own_filesystem_alone_is_no_subtree_check(images: Path,
                                                                  tmp_path: Path) -> None:
    mounts = read_mounts()
    assert is_filesystem_root(images / "own", mounts)
    assert not is_filesystem_root(images / "bound", mounts)  # root /…/data/sub
    assert not is_filesystem_root(images / "plain", mounts)
    names = ("own", "plain", "bound")
    inv = make_inventory(image_root=str(images / "plain"),
                         nodes=[make_node(1), make_node(2, image="own"),
                                make_node(3, image="bound")],
                         images=[Image(name=n, root=PurePosixPath(images / n))
                                 for n in names if n != "plain"])
    cluster = resolve_cluster(inv)
    paths = Paths(home=tmp_path / "home")
    plan = nfs_plan(cluster, paths, kind=NfsServerKind.KNFSD)
    exported = {ln.split()[0]: ln.split()[1] for ln in plan.text.splitlines()
                if ln and not ln.startswith("#")}
    assert ",no_subtree_check," in exported[str(images / "own")]
    assert ",subtree_check," in exported[str(images / "plain")]
    assert ",subtree_check," in exported[str(images / "bound")]
    assert rendered_configs(cluster, paths)["exports"].text == plan.text


def test_layers_on_the_state_filesystem_are_subtree_check(tmp_path: Path) -> None:
    """The same rule for node and group layers without a view of `/`: a tmpfs stands in for
    the state filesystem, node01's layer is a tmpfs of its own on it. node02's layer and the
    group's are directories of the state filesystem: `subtree_check` (else node02 forges
    handles into node01's layer, tests/e2e/test_knfsd.py); node01's keeps
    `no_subtree_check`. `oneroot render` writes what `nfs apply` applies."""
    state = tmp_path / "state"
    layer = state / "systems" / "node01"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(state)], check=True)
    try:
        layer.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(layer)],
                       check=True)
        try:
            inv = make_inventory(
                image_root="/srv/images/bookworm", groups=[layer_group("compute")],
                nodes=[make_node(1), make_node(2, groups=("default", "compute"))],
                settings=settings_under(state, nfs_server=NfsServerKind.KNFSD))
            cluster, paths = resolve_cluster(inv), Paths(home=tmp_path / "home")
            plan = nfs_plan(cluster, paths)
            exported = {ln.split()[0]: ln.split()[1] for ln in plan.text.splitlines()
                        if ln and not ln.startswith("#")}
            assert rendered_configs(cluster, paths)["exports"].text == plan.text
        finally:
            subprocess.run(["umount", str(layer)], check=True)
    finally:
        subprocess.run(["umount", str(state)], check=True)
    assert exported[str(layer)].endswith(",no_subtree_check)")
    assert exported[str(state / "systems/node02")].endswith(",subtree_check)")
    assert exported[str(state / "groups/compute")].endswith(",subtree_check)")
