"""Which knfsd image exports are `subtree_check`, decided on the real mount table
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
from oneroot.testing.inventory import make_inventory, make_node

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
