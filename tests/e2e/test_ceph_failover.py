"""Failover of a boot server under running QEMU nodes with the Linux NFS client (issue 16
item 4), on the lab `oneroot lab up --servers 2 --storage ceph` runs (`oneroot.ops.labha`):
servers A and B (namespaces on the Ceph's lab network, a home each on ONE
PostgreSQL, `oneroot nfs keepalived NAME` and `oneroot serve --server-id NAME` in each),
nodes PXE-booted whose `root=` names A's service address, and whose busybox init appends a
numbered line with its uptime to `/var/lines` every 0.1 s through its root (the union:
fuse-overlayfs copies `/var` up into the node's own rw NFS layer), each through
`dd conv=fsync`.

node01 boots and writes; A is killed (interface down, SIGKILL to everything in it). B must
take A's address and A's ganesha-ceph instance, node01 must write on (no acknowledged line
lost: read back from CephFS; the longest gap in its own uptime is the stall reported), and
node02, powered on during the outage, must boot from B (B's DHCP, boot files and script;
its root on A's address, served by B). Then A returns: it takes its address and instance
back, node01 writes on through it, and B's processes are the ones it had (no restart).
The Ceph is the run's one (`ceph_cluster`: scripts/test runs every Ceph test in one stage).
Needs root, QEMU, Ceph, nfs-ganesha-ceph, keepalived and PostgreSQL.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from oneroot.errors import LabError
from oneroot.initramfs.busybox import Busybox
from oneroot.initramfs.kernel import Kernel
from oneroot.lab import QemuVm
from oneroot.ops.labha import MEMBERS, HaLab
from oneroot.testing.ceph import DAEMONS, CephCluster, retire
from oneroot.testing.postgres import PostgresServer, postgres_bin

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, ceph-fuse)"),
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in (*DAEMONS, "ceph-fuse", "ganesha.nfsd",
                                               "ganesha-rados-grace", "keepalived",
                                               "qemu-system-x86_64")),
        reason="needs ceph, nfs-ganesha-ceph, keepalived and QEMU"),
]

A, B = MEMBERS
LINES_PER_MARK = 20  # the writer prints `oneroot-line N` on its console every 20 lines


def _ganesha_logs(ha: HaLab) -> str:
    """The end of each server's ganesha instance logs (its own and a peer's it took)."""
    logs = sorted(ha.workdir.glob("home-*/run/ganesha-instances/*/ganesha.log"))
    return "\n".join(f"{log.relative_to(ha.workdir)}:\n{log.read_text(errors='replace')[-1500:]}"
                     for log in logs)


def _console(ha: HaLab, vm: QemuVm, pattern: str, *, timeout: float) -> re.Match[str]:
    try:
        return vm.wait_for(pattern, timeout=timeout)
    except LabError as exc:
        raise AssertionError(f"{exc.message}\n{exc.hint}\n{ha.state()}") from None


def _next_mark(ha: HaLab, node: str, more: int) -> str:
    """The console mark of the line `more` marks after the last one in CephFS."""
    return f"oneroot-line {(len(ha.lines(node)) // LINES_PER_MARK + more) * LINES_PER_MARK} "


def _stall(lines: list[tuple[int, float]], after: int) -> tuple[float, int]:
    """The longest gap between two lines from line `after` on (uptime), and where."""
    return max((later[1] - earlier[1], earlier[0])
               for earlier, later in itertools.pairwise(lines) if earlier[0] >= after)


def test_a_running_node_survives_its_servers_death(
        ceph_cluster: CephCluster, postgres_server: PostgresServer, tmp_path: Path,
        node_kernel: Kernel, busybox: Busybox) -> None:
    assert postgres_bin("initdb").exists()
    lab = ceph_cluster.lab
    assert lab is not None
    # The run's one Ceph served the integration tests first: still healthy?
    print(f"e2e failover: Ceph HEALTH_OK after {ceph_cluster.wait_healthy()} s")
    started = time.monotonic()
    with ceph_cluster.mounted(tmp_path / "cephfs") as mount:
        # HaLab works in a CephFS directory of its own (`oneroot-ha-PID-RANDOM`), with
        # addresses no other Ceph test uses (hosts .4/.5, services .112/.113).
        ha = HaLab(lab=lab, ceph=ceph_cluster, db_url=postgres_server.new_schema_url(),
                   workdir=tmp_path / "ha", mount=mount,
                   progress=lambda m: print(f"e2e failover: {m}", flush=True))
        try:
            ha.prepare(kernel=node_kernel, busybox=busybox, nodes=2)
            print(f"e2e failover: set-up {time.monotonic() - started:.1f} s")
            _failover_and_return(ha)
        except LabError as exc:  # its hint is the servers' state: shown, not dropped
            raise AssertionError(f"{exc.message}\n{exc.hint}\n{_ganesha_logs(ha)}") from None
        finally:
            ha.stop()
            for server in ha.servers.values():
                retire(lab, server.ns.netns)


def _failover_and_return(ha: HaLab) -> None:
    a, b = ha.servers["a"], ha.servers["b"]
    phase = time.monotonic()
    ha.start_servers()
    print(f"e2e failover: servers up (instances, serve, B's boot files) in "
          f"{time.monotonic() - phase:.1f} s")
    phase = time.monotonic()
    node01 = ha.power_on("node01")
    _console(ha, node01, "oneroot-line 20 ", timeout=400)
    assert f"root={A.service}:" in node01.serial_text() or \
        f":{A.service}:" in node01.serial_text(), node01.serial_text()[-3000:]
    print(f"e2e failover: node01 booted (root on A's service address) and writing in "
          f"{time.monotonic() - phase:.1f} s")

    before = len(ha.lines("node01"))
    killed = time.monotonic()
    a.die()
    moved = ha.wait(lambda: b.holds(A.service), "A's address on B", 60)
    node02 = ha.power_on("node02")  # during the outage: only B answers
    took = ha.wait(lambda: b.serving(A.service), "A's instance on B", 120)
    match = _console(ha, node01, _next_mark(ha, "node01", 3), timeout=240)
    resumed = time.monotonic() - killed
    _console(ha, node02, "oneroot-line 20 ", timeout=400)
    booted02 = time.monotonic() - killed
    serial02 = node02.serial_text()
    assert f"oneroot.status=http://{B.host}:" in serial02, serial02[-3000:]
    got = ha.lines("node01")
    stall, at = _stall(got, 1)
    print(f"e2e failover: A killed; address on B after {moved:.1f} s, A's instance on B "
          f"after {took:.1f} s; node01 wrote again, {match.group(0).strip()!r} seen "
          f"{resumed:.1f} s after the kill; lines in CephFS {len(got)} (before the kill "
          f"{before}); longest stall {stall:.1f} s (after line {at}); node02, powered on "
          f"during the outage, booted from B and wrote 20 lines {booted02:.1f} s after the "
          "kill")

    pids = b.pids()
    assert set(pids) == {"keepalived", "serve"}, pids
    back = time.monotonic()
    at_return = len(ha.lines("node01"))
    a.come_back(ha.boot_dir("a"))
    home = ha.wait(lambda: a.serving(A.service) and not b.holds(A.service),
                   "A's address and instance back on A", 120)
    match = _console(ha, node01, _next_mark(ha, "node01", 3), timeout=240)
    rejoined = time.monotonic() - back
    got = ha.lines("node01")
    stall_back, at_back = _stall(got, at_return)
    print(f"e2e failover: A back; its address and instance on A after {home:.1f} s; "
          f"node01 wrote on through A, {match.group(0).strip()!r} seen {rejoined:.1f} s "
          f"after A's return; longest stall since {stall_back:.1f} s (after line "
          f"{at_back}); lines in CephFS {len(got)}; B not restarted (PIDs {pids})")
    assert b.pids() == pids, "B's keepalived or serve was restarted"
    assert b.serving(B.service)
    numbers = [n for n, _ in got]
    assert numbers == list(range(1, len(numbers) + 1)), "a line is missing or doubled"
    assert len(got) > before + 40
    for vm in (node01, node02):
        assert "oneroot-write-failed" not in vm.serial_text()
    assert [n for n, _ in ha.lines("node02")][:20] == list(range(1, 21))
