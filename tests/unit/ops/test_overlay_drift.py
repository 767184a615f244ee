"""`cluster_drift`: three nodes of a layer group and one outside it, their `upper/` trees
written by hand (as root on the nodes would). Real files, FIFOs and links; runs as root."""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from oneroot.fsutil import make_whiteout
from oneroot.model.paths import Paths
from oneroot.model.resolved import ResolvedCluster, resolve_cluster
from oneroot.ops.overlay_drift import DriftReport, PathDrift, cluster_drift
from oneroot.testing.inventory import layer_group, make_inventory, make_node, settings_under

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts and owners need root")


@pytest.fixture
def cluster(tmp_path: Path) -> ResolvedCluster:
    nodes = [make_node(i, groups=("default", "compute")) for i in (1, 2, 3)]
    nodes.append(make_node(4))
    for n in nodes:
        (tmp_path / "systems" / n.name / "upper" / "etc").mkdir(parents=True)
    return resolve_cluster(make_inventory(nodes=nodes, groups=[layer_group("compute")],
                                          settings=settings_under(tmp_path)))


def put(tmp: Path, node: str, rel: str, data: bytes, mode: int = 0o644) -> Path:
    path = tmp / "systems" / node / "upper" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


def paths(tmp: Path) -> Paths:
    return Paths(home=tmp / "home")


def by_path(report: DriftReport) -> dict[str, PathDrift]:
    return {p.path: p for p in report.paths}


class FifoWatch:
    """A writer blocked on a FIFO: it gets through only if someone opens it for reading."""

    def __init__(self, fifo: Path) -> None:
        os.mkfifo(fifo)
        self.fifo = fifo
        self.opened = threading.Event()
        self.thread = threading.Thread(target=self._write, daemon=True)
        self.thread.start()
        # Only a reader that comes after the writer blocks is seen: wait for the block.
        deadline = time.monotonic() + 30  # a bound for a loaded machine
        while self._wchan() != "wait_for_partner":
            assert time.monotonic() < deadline, "the FIFO writer never blocked"
            time.sleep(0.01)

    def _wchan(self) -> str:
        try:
            return Path(f"/proc/self/task/{self.thread.native_id}/wchan").read_text()
        except OSError:
            return ""

    def _write(self) -> None:
        fd = os.open(self.fifo, os.O_WRONLY)  # blocks until a reader opens it
        self.opened.set()
        os.close(fd)

    def release(self) -> bool:
        """Whether a reader had opened it; unblocks the writer either way."""
        # A reader that came and went woke the writer; whether it has run since or not, it
        # is no longer blocked (a 1 s wait for it to run could miss a late wake under load).
        was = self.opened.is_set() or self._wchan() != "wait_for_partner"
        try:
            fd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
            self.thread.join(5)
            os.close(fd)
        except OSError as exc:
            assert exc.errno == errno.ENXIO
        return was


def test_identical_change_on_all_is_offered_for_promote(cluster: ResolvedCluster,
                                                        tmp_path: Path) -> None:
    for n in ("node01", "node02", "node03"):
        put(tmp_path, n, "etc/motd", b"same\n")
    report = cluster_drift(cluster, paths(tmp_path), "compute")
    assert report.nodes == ("node01", "node02", "node03")
    drift = by_path(report)["/etc/motd"]
    assert drift.nodes == ("node01", "node02", "node03")
    assert drift.contents == 1 and drift.identical_on_all
    assert drift.promote == "oneroot overlay promote node01 /etc/motd --to compute"


def test_differing_contents_and_modes_are_counted(cluster: ResolvedCluster,
                                                  tmp_path: Path) -> None:
    put(tmp_path, "node01", "etc/motd", b"one\n")
    put(tmp_path, "node02", "etc/motd", b"one\n")
    put(tmp_path, "node03", "etc/motd", b"two\n")
    put(tmp_path, "node01", "etc/issue", b"x\n", 0o644)
    put(tmp_path, "node02", "etc/issue", b"x\n", 0o600)  # same bytes, other mode
    put(tmp_path, "node03", "etc/issue", b"x\n", 0o644)
    drifts = by_path(cluster_drift(cluster, paths(tmp_path), "compute"))
    for path in ("/etc/motd", "/etc/issue"):
        d = drifts[path]
        assert d.contents == 2 and not d.identical_on_all
        assert d.promote is None


def test_whiteout_is_a_deletion_of_its_own_kind(cluster: ResolvedCluster,
                                                tmp_path: Path) -> None:
    make_whiteout(tmp_path / "systems/node02/upper/etc/issue")
    put(tmp_path, "node01", "etc/issue", b"")
    drift = by_path(cluster_drift(cluster, paths(tmp_path), "compute"))["/etc/issue"]
    kinds = {n: v.kind for n, v in drift.variants}
    assert kinds == {"node01": "file", "node02": "whiteout"}
    assert drift.contents == 2


def test_planted_links_are_reported_never_followed(cluster: ResolvedCluster,
                                                   tmp_path: Path) -> None:
    upper = tmp_path / "systems/node03/upper"
    (upper / "etc/shadow").symlink_to("/etc/shadow")
    watch = FifoWatch(tmp_path / "server-fifo")  # a server file the node points at
    (upper / "etc/pipe").symlink_to(watch.fifo)
    (upper / "etc/dir").symlink_to("/etc")  # a link to a directory is not walked into
    report = cluster_drift(cluster, paths(tmp_path), "compute")
    assert not watch.release(), "the server's FIFO was opened through the node's link"
    drifts = by_path(report)
    shadow = dict(drifts["/etc/shadow"].variants)["node03"]
    assert (shadow.kind, shadow.detail) == ("symlink", "/etc/shadow")
    assert dict(drifts["/etc/pipe"].variants)["node03"].kind == "symlink"
    assert not any(p.startswith("/etc/dir/") for p in drifts)
    summary = {s.node: s for s in report.summaries}["node03"]
    assert summary.bytes == 0 and summary.files == 3 and summary.error is None


def test_fifo_in_the_layer_is_not_opened(cluster: ResolvedCluster, tmp_path: Path) -> None:
    watch = FifoWatch(tmp_path / "systems/node01/upper/etc/fifo")
    report = cluster_drift(cluster, paths(tmp_path), "compute")
    assert not watch.release(), "the node's FIFO was opened"
    assert dict(by_path(report)["/etc/fifo"].variants)["node01"].kind == "FIFO"


def test_file_over_the_cap_is_not_compared(cluster: ResolvedCluster, tmp_path: Path) -> None:
    for n in ("node01", "node02", "node03"):
        big = put(tmp_path, n, "etc/big", b"")
        os.truncate(big, 1 << 40)  # sparse 1 TiB: reading it would never end
        put(tmp_path, n, "etc/mid", b"m" * 4097)  # just over the cap given, identical
    drifts = by_path(cluster_drift(cluster, paths(tmp_path), "compute", limit=4096))
    for path in ("/etc/big", "/etc/mid"):
        assert {v.kind for _, v in drifts[path].variants} == {"too large"}
        assert drifts[path].contents == 3 and drifts[path].promote is None


def test_group_filter_and_summary(cluster: ResolvedCluster, tmp_path: Path) -> None:
    put(tmp_path, "node04", "etc/only-node04", b"1234")
    put(tmp_path, "node01", "etc/motd", b"12")
    compute = cluster_drift(cluster, paths(tmp_path), "compute")
    assert "/etc/only-node04" not in by_path(compute)
    everyone = cluster_drift(cluster, paths(tmp_path))
    assert everyone.nodes == ("node01", "node02", "node03", "node04")
    assert by_path(everyone)["/etc/only-node04"].nodes == ("node04",)
    summary = {s.node: s for s in everyone.summaries}
    assert (summary["node04"].files, summary["node04"].bytes) == (1, 4)
    assert summary["node04"].last_change is not None
    assert summary["node02"].files == 0
    # all nodes share no layer group: nothing identical is offered
    assert everyone.promote_to is None


def test_opaque_dir_and_stat_kinds(cluster: ResolvedCluster, tmp_path: Path) -> None:
    d = tmp_path / "systems/node02/upper/etc/cron.d"
    d.mkdir()
    os.setxattr(d, "trusted.overlay.opaque", b"y")
    drift = by_path(cluster_drift(cluster, paths(tmp_path), "compute"))
    assert dict(drift["/etc/cron.d"].variants)["node02"].kind == "opaque directory"
    assert "/etc" not in drift  # a plain directory is not a change
    assert stat.S_ISDIR(os.lstat(d).st_mode)


def test_entry_cap_and_missing_layer_are_said(cluster: ResolvedCluster,
                                              tmp_path: Path) -> None:
    for i in range(5):
        put(tmp_path, "node01", f"etc/f{i}", b"")
    for n in ("node01", "node02"):
        put(tmp_path, n, "etc/motd", b"same\n")
    (tmp_path / "systems/node03/upper/etc").rmdir()
    (tmp_path / "systems/node03/upper").rmdir()
    report = cluster_drift(cluster, paths(tmp_path), "compute", max_entries=4)
    summary = {s.node: s for s in report.summaries}
    assert summary["node01"].error == "more than 4 entries: the rest is not compared"
    assert summary["node01"].files == 3  # etc, f0, f1, f2: the walk stopped there
    assert summary["node02"].error is None
    assert summary["node03"].error is not None and "No such file" in summary["node03"].error
    motd = by_path(report)["/etc/motd"]
    assert motd.nodes == ("node02",) and motd.promote is None


def test_generated_identity_files_are_left_out(cluster: ResolvedCluster,
                                               tmp_path: Path) -> None:
    for i, n in enumerate(("node01", "node02", "node03")):
        put(tmp_path, n, "etc/hostname", f"{n}\n".encode())
        put(tmp_path, n, "etc/motd", b"same\n")
        ident = paths(tmp_path).identity_dir(n)
        ident.mkdir(parents=True)
        if i < 2:  # node03 has no manifest: its hostname is a change of its own
            (ident / "manifest.json").write_text('{"files": {"etc/hostname": {}}}')
    drifts = by_path(cluster_drift(cluster, paths(tmp_path), "compute"))
    assert drifts["/etc/hostname"].nodes == ("node03",)
    assert drifts["/etc/motd"].contents == 1


def test_a_block_node_is_said_to_be_unscanned(tmp_path: Path) -> None:
    """union=block: its upper/ in the node dir holds only what its ext4 top was made from;
    drift says so instead of reporting that stale copy."""
    node = make_node(1, union="block")
    put(tmp_path, "node01", "etc/motd", b"stale copy\n")
    block = resolve_cluster(make_inventory(nodes=[node], settings=settings_under(tmp_path)))
    report = cluster_drift(block, paths(tmp_path))
    assert report.paths == ()
    assert "union=block: its changes are in its ext4 file" in (report.summaries[0].error or "")
