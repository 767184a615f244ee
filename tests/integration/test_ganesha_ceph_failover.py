"""Failover of a boot server's NFS service on CephFS (issue 16 item 4, in namespaces).

Two boot servers, A and B, each a namespace on the session Ceph's lab network with a home
of its own on one PostgreSQL (one inventory: setting `ha_servers` names both), each running
`oneroot nfs keepalived NAME`: keepalived (VRRP only, unicast between the servers, adverts
from others dropped) holds the service addresses (A: .102, B: .103), and its notify,
`oneroot nfs instance notify`, starts the ganesha-ceph instance of each address this host
holds (its `rados_cluster` nodeid is the address) and stops the others. A node (its own
namespace) writes numbered lines through A's address with a stateful NFSv4.0 client
(`oneroot.testing.nfs4state`: the host has no kernel NFS client), each one FILE_SYNC.
Then A dies: its interface goes down and every process in it gets SIGKILL. B takes A's
address and starts A's instance, the node reconnects, re-establishes its client id and
reclaims its open in the grace period, while a stranger's new open is refused with
NFS4ERR_GRACE. No acknowledged line may be lost (read back from CephFS afterwards); the
longest stall is reported. Then A returns and takes its address back; B stops A's instance
and evicts its CephFS sessions, and keeps running (no restart). Needs root.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oneroot.lab import Lab
from oneroot.lab.netns import Client
from oneroot.model.haservers import parse_ha_servers
from oneroot.model.paths import Paths
from oneroot.model.resolved import resolve_cluster
from oneroot.nfs.ganesha_ceph import grace_command
from oneroot.ops.db import join_database
from oneroot.ops.inventory import commit, init_cluster, open_store
from oneroot.ops.nfs_serving import nfs_plan
from oneroot.testing.ceph import DAEMONS, CephCluster, ceph_inventory, retire, tiny_image
from oneroot.testing.nfs4state import NFS4ERR_GRACE
from oneroot.testing.postgres import PostgresServer
from oneroot.testing.wait import until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, ceph-fuse)"),
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in (*DAEMONS, "ceph-fuse", "ganesha.nfsd",
                                               "ganesha-rados-grace", "keepalived")),
        reason="needs ceph, nfs-ganesha-ceph, nfs-ganesha-rados-grace and keepalived"),
]

SERVICE = {"a": ipaddress.IPv4Interface("10.96.0.102/24"),
           "b": ipaddress.IPv4Interface("10.96.0.103/24")}
HOSTS = {"a": "10.96.0.2/24", "b": "10.96.0.3/24"}
HA_SERVERS = " ".join(f"{name}:{SERVICE[name].ip}:{HOSTS[name].split('/')[0]}"
                      for name in SERVICE)
LINES = 250  # one each 0.1 s: the failover happens in the middle
ONEROOT = [sys.executable, "-m", "oneroot"]
STARTED_LINES = 50  # acknowledged before A dies


class Head:
    """One boot server: its namespace, its home, and `oneroot nfs keepalived` in it."""

    def __init__(self, lab: Lab, name: str, home: Path) -> None:
        self.lab = lab
        self.name = name
        self.home = home
        self.client: Client = lab.add_client(HOSTS[name])
        self.instances = home / "run" / "ganesha-instances"
        self.keepalived: subprocess.Popen[bytes] | None = None

    def oneroot(self, *argv: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return self.lab.run_in_ns([*ONEROOT, "--home", str(self.home), *argv],
                                  netns=self.client.netns, timeout=timeout)

    def start_keepalived(self) -> None:
        with (self.home / "keepalived.log").open("ab") as out:
            self.keepalived = self.lab.popen_in_ns(
                [*ONEROOT, "--home", str(self.home), "nfs", "keepalived", self.name],
                netns=self.client.netns, what=f"keepalived {self.name}", stdout=out,
                stderr=subprocess.STDOUT)

    def addresses(self) -> str:
        return self.lab.run_in_ns(["ip", "-4", "addr", "show", "dev", "eth0"],
                                  netns=self.client.netns, check=False).stdout

    def holds(self, inst: str) -> bool:
        return f"{SERVICE[inst].ip}/" in self.addresses()

    def notify_log(self) -> str:
        log = self.instances / "notify.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def ganesha_log(self, inst: str) -> str:
        log = self.instances / str(SERVICE[inst].ip) / "ganesha.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def serving(self, inst: str) -> bool:
        out = self.lab.run_in_ns(["ss", "-ltnH", f"src {SERVICE[inst].ip}:2049"],
                                 netns=self.client.netns, check=False).stdout
        return bool(out.strip())

    def die(self) -> None:
        """The server is killed: interface down, SIGKILL to everything in it."""
        self.lab.run_in_ns(["ip", "link", "set", "eth0", "down"], netns=self.client.netns)
        self.kill_all()

    def kill_all(self) -> None:
        pids = subprocess.run(["ip", "netns", "pids", self.client.netns], capture_output=True,
                              text=True, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        if self.keepalived is not None:
            self.keepalived.wait(10)

    def come_back(self) -> None:
        self.lab.run_in_ns(["ip", "link", "set", "eth0", "up"], netns=self.client.netns)
        self.start_keepalived()


def test_a_dead_servers_address_and_clients_move_to_its_peer(
        ceph_cluster: CephCluster, postgres_server: PostgresServer, tmp_path: Path) -> None:
    lab = ceph_cluster.lab
    assert lab is not None
    with ceph_cluster.mounted(tmp_path / "cephfs") as mount:
        base = mount / f"failover-{os.getpid()}-{time.monotonic_ns()}"
        image = base / "images" / "tiny"
        tiny_image(image)
        inv = ceph_inventory(base, mount=mount, image=image, conf=ceph_cluster.conf,
                             server=SERVICE["a"].ip)
        inv = inv.replace(settings=dataclasses.replace(
            inv.settings, ha_servers=parse_ha_servers(HA_SERVERS)))
        # Each server its home, on one PostgreSQL: A makes the inventory there, B joins it.
        url = postgres_server.new_schema_url()
        first = Paths(home=tmp_path / "home-a")
        init_cluster(first, {"server_address": str(SERVICE["a"].ip),
                             "subnet": "10.96.0.0/24"}, db_url=url)
        store = open_store(first)
        try:
            commit(store, inv)
        finally:
            store.close()
        join_database(Paths(home=tmp_path / "home-b"), url)
        heads = {name: Head(lab, name, tmp_path / f"home-{name}") for name in SERVICE}
        cluster = resolve_cluster(inv)
        leaves = [grace_command(ceph, "remove", ceph.nodeid) for ceph in (
            nfs_plan(cluster, Paths(home=heads["a"].home), bind=addr.ip).ctx.ceph
            for addr in SERVICE.values()) if ceph is not None]
        # Node layers in CephFS and each export's cephx user: `oneroot nfs apply` on A
        # (the host itself does not reach the Ceph network).
        heads["a"].oneroot("nfs", "apply")
        node01, node02 = lab.add_client("10.96.0.11/24"), lab.add_client("10.96.0.12/24")
        a, b = heads["a"], heads["b"]
        try:
            _failover(lab, ceph_cluster, a, b, node01, node02, base)
        finally:
            for head in heads.values():
                head.kill_all()
            for netns in (a.client.netns, b.client.netns, node01.netns, node02.netns):
                retire(lab, netns)
            # Dead members would keep the cluster in grace for the next test's ganesha.
            for argv in leaves:
                ceph_cluster.run(*argv)
            for inst in SERVICE:  # a killed instance's CephFS sessions hold capabilities
                ceph_cluster.evict_sessions(f"ganesha-{SERVICE[inst].ip}-")


def _failover(lab: Lab, ceph: CephCluster, a: Head, b: Head, node01: Client, node02: Client,
              base: Path) -> None:
    def state() -> str:
        return "\n".join(f"{h.name}: {h.addresses()}\n{h.ganesha_log('a')[-1500:]}\n"
                         f"notify: {h.notify_log()}" for h in (a, b))

    a.start_keepalived()
    b.start_keepalived()
    for head in (a, b):
        until(lambda h=head: h.holds(h.name) and h.serving(h.name)  # type: ignore[misc]
              and "NOT IN GRACE" in h.ganesha_log(h.name), f"{head.name} serving", 120, state)
    target = f"{base}/systems/node01/upper/fsync-lines.txt"
    writer = lab.popen_in_ns(
        [sys.executable, "-m", "oneroot.testing.nfs4state", str(SERVICE["a"].ip), target,
         "--lines", str(LINES), "--interval", "0.1", "--id", "node01", "--timeout", "300"],
        netns=node01.netns, what="nfs4 writer", stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)

    def written() -> int:
        with contextlib.suppress(FileNotFoundError):
            return Path(target).read_text().count("\n")
        return 0

    # A dies once the writer is well under way (lines on stable storage, read through CephFS):
    # a fixed 8 s raced the writer's start (Python, connect, client id, open) under load.
    until(lambda: written() >= STARTED_LINES, "the writer's first lines", 120, state)
    a.die()
    moved = until(lambda: b.holds("a"), "A's address on B", 60, state)
    started = until(lambda: b.serving("a"), "A's instance serving on B", 60, state)
    status = {st["name"]: st for st in json.loads(
        b.oneroot("nfs", "instance", "status", "--json").stdout)}
    assert status["a"]["held"] and status["a"]["pid"] and status["a"]["listening"], status
    stranger = lab.run_in_ns(
        [sys.executable, "-m", "oneroot.testing.nfs4state", str(SERVICE["a"].ip),
         f"{base}/systems/node02/upper/stranger.txt", "--stranger"], netns=node02.netns,
        check=False)
    out, err = writer.communicate(timeout=360)
    report = json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else {}
    print(f"failover: A killed; address on B after {moved:.1f} s, A's instance on B serving "
          f"after {started:.1f} s; writer {report}; stranger {stranger.stdout.strip()}")
    assert report.get("acknowledged") == LINES, (report, err.decode()[-2000:], state())
    assert report["reclaims"] >= 1
    # No acknowledged line lost: the file in CephFS holds every line, in order.
    text = Path(target).read_text()
    assert text == "".join(f"{n:06d}\n" for n in range(1, LINES + 1)), text[-200:]
    assert json.loads(stranger.stdout)["stranger_status"] == NFS4ERR_GRACE, stranger
    # A returns: it takes its address back; B keeps running, its own instance untouched.
    b_keepalived = b.keepalived
    a.come_back()
    back = until(lambda: a.holds("a") and not b.holds("a") and a.serving("a"),
                 "A's address and instance back on A", 90, state)
    assert b_keepalived is b.keepalived and b_keepalived is not None
    assert b_keepalived.poll() is None and b.holds("b") and b.serving("b")
    print(f"failover: A back in {back:.1f} s, B not restarted")
    # B stopped A's instance and evicted the CephFS sessions that process held (the MDS
    # would keep them, with their capabilities, for a reclaim that never comes).
    until(lambda: " a BACKUP stopped pid=" in b.notify_log(), "B's stop of A's instance", 60,
          state)
    stop = next(line for line in b.notify_log().splitlines() if " a BACKUP stopped pid=" in line)
    # Only now: B's notify runs after its keepalived gave the address up (a listening socket
    # outlives its address), and under load it starts seconds later.
    assert not b.serving("a")
    pid = stop.split("pid=")[1].split()[0]
    left = [s for s in ceph.client_sessions() if isinstance(s.get("client_metadata"), dict)
            and str(s["client_metadata"].get("pid")) == pid  # type: ignore[union-attr]
            and str(s["client_metadata"].get("uuid", "")).startswith(  # type: ignore[union-attr]
                f"ganesha-{SERVICE['a'].ip}-")]
    print(f"failover: B's stop of A's instance: {stop.split(' ', 1)[1]}; sessions left {left}")
    assert not left, left

