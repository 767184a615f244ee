"""A node's root user plants links in its own directory while it is in client mode (the
directory is exported rw, `no_root_squash`); then the administrator switches it to
`union=server` and runs the overlay tools and `node rm`. Nothing outside the node's directory
may be read, written, removed or mounted over. Real overlayfs mounts (root), a stand-in
`exportfs`: no NFS server is started.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import tarfile
from pathlib import Path

import pytest

from oneroot.model.paths import Paths
from oneroot.model.resolved import ResolvedCluster, resolve_cluster
from oneroot.nfs.server_union import mounted_unions
from oneroot.nfs.view import read_mounts
from oneroot.ops import overlays as ov
from oneroot.ops.nfs_serving import apply_nfs
from oneroot.testing.files import tree_snapshot
from oneroot.testing.inventory import make_inventory, make_node, settings_under

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts)"),
]


@dataclasses.dataclass
class Server:
    base: Path
    paths: Paths
    exportfs: Path
    exports: Path

    @property
    def node_dir(self) -> Path:
        return self.base / "systems" / "node01"

    @property
    def outside(self) -> Path:
        """The server's own files: what the node's links point at."""
        return self.base / "server"

    def inventory(self, union: str) -> ResolvedCluster:
        return resolve_cluster(make_inventory(
            nodes=[make_node(1, union=union), make_node(2)],
            settings=settings_under(self.base, nfs_server="knfsd"),
            image_root=self.base / "image"))

    def apply(self, union: str) -> None:
        apply_nfs(self.inventory(union), self.paths, exportfs=str(self.exportfs),
                  exports_file=self.exports)


@pytest.fixture
def server(base: Path) -> Server:
    (base / "image" / "etc").mkdir(parents=True)
    (base / "image" / "etc" / "motd").write_text("image motd\n")
    outside = base / "server"
    (outside / "keep" / "deep").mkdir(parents=True)
    (outside / "secret").write_text("root:SECRET\n")
    (outside / "keep" / "deep" / "file").write_text("server data\n")
    os.chmod(outside, 0o711)
    exportfs = base / "exportfs"
    exportfs.write_text("#!/bin/sh\nexit 0\n")
    exportfs.chmod(0o755)
    s = Server(base=base, paths=Paths(home=base / "home"), exportfs=exportfs,
               exports=base / "exports.d" / "oneroot.exports")
    s.apply("client")
    return s


def _plant(s: Server, what: str) -> None:
    node = s.node_dir
    if what == "merged":
        (node / "merged").symlink_to(s.outside)
    elif what == "union-layers.tmp":
        (node / ".union-layers.tmp").symlink_to(s.outside / "secret")
        (node / ".union-layers").write_text("/somewhere/else\n")  # layers "changed"
    elif what == "work/index":
        (node / "work" / "index").symlink_to(s.outside)
        (node / ".union-layers").write_text("/somewhere/else\n")  # forces the origin reset
    elif what in ("work", "upper"):
        os.rename(node / what, node / f"{what}.old")
        (node / what).symlink_to(s.outside)


@pytest.mark.parametrize("planted", ["merged", "union-layers.tmp", "work/index", "work",
                                     "upper"])
def test_switch_to_server_union_never_follows_a_planted_link(server: Server,
                                                             planted: str) -> None:
    before = tree_snapshot(server.outside)
    _plant(server, planted)
    server.apply("server")
    assert tree_snapshot(server.outside) == before
    overlays = [m for m in read_mounts() if m.fstype == "overlay"]
    assert not [m for m in overlays if m.mount_point.is_relative_to(server.outside)]
    (entry,) = mounted_unions(server.base / "systems").values()
    merged = server.node_dir / "merged"
    assert entry.mount_point == merged
    for name in ("merged", "work", "upper"):
        assert stat.S_ISDIR(os.lstat(server.node_dir / name).st_mode), name
    assert (merged / "etc" / "motd").read_text() == "image motd\n"
    assert (merged / "etc" / "hostname").read_text() == "node01\n"
    if planted == "work/index":
        assert stat.S_ISDIR(os.lstat(server.node_dir / "work" / "index").st_mode)


def test_overlay_tools_and_node_rm_never_follow_planted_links(server: Server) -> None:
    """Client mode: the node planted links in its directory and its upper; ls, diff, reset
    and the archive of `node rm` see links, never what they point to."""
    before = tree_snapshot(server.outside)
    node = server.node_dir
    (node / "merged").symlink_to(server.outside)
    (node / "work" / "index").symlink_to(server.outside)
    (node / "upper" / "etc" / "motd").symlink_to(server.outside / "secret")
    (node / "upper" / "keep").symlink_to(server.outside / "keep")
    inv = server.inventory("client")
    changes = {f"/{c.rel}": c for c in ov.list_overlay(inv, server.paths, "node01")}
    assert changes["/etc/motd"].node.target == str(server.outside / "secret")
    assert "SECRET" not in "".join(d for _c, d in ov.diff_overlay(inv, server.paths, "node01"))
    ov.reset_layer(inv, server.paths, "node01", archive=False)
    assert not (node / "upper" / "keep").is_symlink()
    assert not (node / "work" / "index").is_symlink()
    (node / "work" / "index").symlink_to(server.outside)
    archive = ov.archive_node_dir(inv, server.paths, "node01")
    assert archive is not None and not node.exists()
    with tarfile.open(archive) as tar:
        index = tar.getmember("node01/layer/work/index")
        assert index.issym() and "server data" not in str(tar.getnames())
    assert tree_snapshot(server.outside) == before
