"""The server-side union end to end (issue 6, part 2): a `union=server` node boots one plain
NFS root, the merged tree the server's overlayfs makes of its layers, exported rw to it alone.

Boots (2; scenarios combined per boot):
  A. node01: sees its layer's /etc/motd and the group layer over the image; has exactly one
     NFS mount and no fuse-overlayfs process; writes /root/persist and deletes /etc/issue.net,
     then `sync`. On the server both are in its upper/: a file and a `c 0 0` whiteout.
  B. node01 again, after the image changed under its mounted union: the write and the deletion
     persist, the image change is seen (the union was remounted when the node fetched its
     boot script).
An `oneroot overlay put` while the union is mounted (in `oneroot serve`'s mount namespace)
goes through the safe remount. The probe is the one of tests/e2e/test_union_root.py.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

import pytest

from oneroot.ops.lab import LabCluster
from oneroot.testing.cache import suite_cache_dir
from oneroot.testing.labprobe import (
    PERSIST_AND_POWEROFF,
    PROBE_LIB,
    install_probe,
    sha256_of,
    wait_probe,
)

pytestmark = pytest.mark.e2e

BOOT_TIMEOUT = 420

PROBE = "#!/bin/bash\n" + PROBE_LIB + r"""say hostname="$(hostname)"
say root_fstype="$(findmnt -n -o FSTYPE /)"
say root_source="$(findmnt -n -o SOURCE /)"
say nfs4_mounts="$(findmnt -n -t nfs4 | wc -l)"
say nfs_mounts="$(findmnt -n -t nfs,nfs4 | wc -l)"
say fuse_procs="$(fuse_pids | wc -l)"
say motd="$(sha /etc/motd)"
say layered="$(cat /etc/oneroot-layer-test 2>/dev/null || echo none)"
say image_change="$(cat /etc/oneroot-image-change 2>/dev/null || echo none)"
""" + PERSIST_AND_POWEROFF


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabCluster]:
    workdir = tmp_path_factory.mktemp("serverunion")
    c = LabCluster(workdir=workdir, cache_dir=suite_cache_dir(), progress=print)
    c.prepare()
    # The lab's `default` image is its workdir, which holds the state dir: exported through a
    # masked view, it would nest node01's union export inside the view, which nfs-ganesha 4.3
    # cannot unexport (oneroot refuses that). An empty image dir takes its place.
    empty = workdir / "images" / "empty"
    (empty / "etc").mkdir(parents=True, exist_ok=True)
    c.oneroot("image", "use", str(empty), "--name", "default", "--init-system", "systemd")
    c.oneroot("group", "add", "compute", "--set", "group_layer=true")
    c.add_nodes(1, extra=("--set", "union=server"))
    c.oneroot("node", "set", "node01", "--groups", "default,compute")
    try:
        yield c
    finally:
        c.stop_verified()


def test_server_side_union_root(cluster: LabCluster) -> None:
    c = cluster
    image = c.workdir / "images" / c.image_name
    upper = c.node_dir("node01") / "upper"
    (image / "etc" / "oneroot-layer-test").write_text("image\n")
    group = c.group_dir / "compute" / "etc"
    group.mkdir(parents=True, exist_ok=True)
    (group / "oneroot-layer-test").write_text("group\n")
    (image / "etc" / "oneroot-image-change").unlink(missing_ok=True)
    assert (image / "etc" / "issue.net").exists()
    c.start()  # `oneroot serve` makes node01's layer, mounts its union (in its mount namespace)

    # Overlay edits while the union is mounted and exported: each through the safe remount.
    install_probe(c, "node01", PROBE)
    motd = c.workdir / "motd"
    motd.write_text("node01's own motd\n")
    c.oneroot("overlay", "put", "node01", "/etc/motd", str(motd))
    assert (upper / "etc" / "motd").read_text() == motd.read_text()

    # Boot A.
    c.boot("node01")
    p = wait_probe(c, "node01", timeout=BOOT_TIMEOUT)
    assert p["hostname"] == ["node01"]
    assert p["root_fstype"] == ["nfs4"], p["root_fstype"]
    assert p["root_source"] == [f"10.0.0.1:{c.node_dir('node01')}/merged"]
    assert p["nfs4_mounts"] == ["1"] and p["nfs_mounts"] == ["1"]
    assert p["fuse_procs"] == ["0"]
    assert p["motd"] == [sha256_of(motd)]
    assert p["layered"] == ["group"]
    assert p["issue_net"] == ["present"] and p["persist"] == ["none"]
    assert p["wrote"] == ["yes"] and p["deleted"] == ["yes"]
    assert (upper / "root" / "persist").read_text() == "written on node01\n"
    st = os.lstat(upper / "etc" / "issue.net")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, "a c 0 0 whiteout"
    assert (image / "etc" / "issue.net").exists()
    assert "nfs.union.boot_remount node=node01 remounted=True" in c.serve_log.read_text()

    # The image changes under the mounted union; boot B remounts it and sees the change.
    (image / "etc" / "oneroot-image-change").write_text("v2\n")
    try:
        c.boot("node01")
        again = wait_probe(c, "node01", timeout=BOOT_TIMEOUT)
    finally:
        (image / "etc" / "oneroot-image-change").unlink(missing_ok=True)
    assert again["persist"] == ["written_on_node01"]
    assert again["issue_net"] == ["missing"]
    assert again["image_change"] == ["v2"]
    assert again["nfs4_mounts"] == ["1"] and again["fuse_procs"] == ["0"]
    assert c.serve_log.read_text().count("nfs.union.boot_remount node=node01") >= 2
