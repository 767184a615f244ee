"""The session's throwaway Ceph (`oneroot.testing.ceph`): healthy, small, and its CephFS
usable through ceph-fuse. Started once per test run (a session fixture, shared by every Ceph
test of the run's Ceph stage), never per test or module.
Needs root and Debian's ceph packages (scripts/install-packages)."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import pytest

from oneroot.testing.ceph import DAEMONS, CephCluster, CephError

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (ceph-fuse)"),
    pytest.mark.skipif(any(shutil.which(d) is None for d in (*DAEMONS, "ceph-fuse")),
                       reason="needs ceph-mon, ceph-mgr, ceph-osd, ceph-mds and ceph-fuse"),
]

# Measured here (2 cores, shared): ~430 MiB in all, the manager the most (~300 MiB of Python).
RSS_LIMIT_KIB = 900 * 1024


def test_cluster_is_healthy_and_small(ceph_cluster: CephCluster) -> None:
    assert ceph_cluster.health() == "HEALTH_OK"
    rss = ceph_cluster.rss_kib()
    print(f"ceph start {ceph_cluster.timings.start_seconds} s "
          f"steps={ceph_cluster.timings.steps} rss_kib={rss} total_mib={sum(rss.values()) // 1024}")
    assert set(rss) == {"mon.a", "mgr.x", "osd.0", "mds.a"}
    assert sum(rss.values()) < RSS_LIMIT_KIB
    assert ceph_cluster.timings.start_seconds < 120
    # One replica: every pool has size 1 (so one OSD is enough to be healthy).
    pools = ceph_cluster.ceph_json("osd", "pool", "ls", "detail")
    assert isinstance(pools, list) and pools
    assert {p["size"] for p in pools} == {1}


def test_cephfs_through_ceph_fuse(ceph_cluster: CephCluster, tmp_path: Path) -> None:
    mnt = tmp_path / "cephfs"
    probe = f"probe-{secrets.token_hex(4)}"  # the run's one Ceph: a directory of its own
    with ceph_cluster.mounted(mnt):
        (mnt / probe).mkdir()
        (mnt / probe / "a.txt").write_text("written through ceph-fuse\n")
    # A second, independent mount (a new client session) sees the file: it is in CephFS,
    # not in a local cache.
    with ceph_cluster.mounted(tmp_path / "again", subdir=f"/{probe}") as again:
        assert (again / "a.txt").read_text() == "written through ceph-fuse\n"
    assert not (mnt / probe).exists()  # unmounted: the file never was local


def test_a_daemon_that_dies_fails_the_start(tmp_path: Path) -> None:
    # The start's error names the step and the daemon, instead of hanging: a monitor that
    # cannot bind its address (it is not on this host) exits at once.
    cluster = CephCluster(address="192.0.2.1", root=tmp_path / "bad", port=3300)
    with pytest.raises(CephError, match="monitor"):
        try:
            cluster.start(timeout=30)
        finally:
            cluster.stop()
