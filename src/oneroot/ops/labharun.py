"""`oneroot lab up --servers 2 --storage ceph`: the supervisor's side of the two-server lab
(`ops.labha`). It starts, in the lab's namespace, one Ceph (`lab.ceph`: mon, mgr, one OSD on a
sparse file, MDS; a small memory target) and one PostgreSQL (`lab.postgres`), mounts CephFS,
then brings up servers A and B and powers the nodes on from A's service address.

Everything lives under WORKDIR/ha (removed and made anew at each `lab up`, so that a normal
lab's WORKDIR/home is left alone):

    ha/home-a, ha/home-b     the servers' homes (one inventory: the PostgreSQL below)
    ha/boot-a, ha/boot-b     their boot directories (B's replicated from A's)
    ha/ceph, ha/postgres     the cluster and the database (a unix socket in that directory)
    ha/cephfs                CephFS, mounted (ceph-fuse); the nodes' image and layers in it
    ha/vms/NODE.serial.log   each node's console
"""

from __future__ import annotations

import contextlib
import functools
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from oneroot.errors import LabError
from oneroot.initramfs.busybox import fetch_busybox
from oneroot.initramfs.kernel import fetch_kernel
from oneroot.lab import Lab, QemuVm
from oneroot.lab.ceph import DAEMONS, CephCluster
from oneroot.lab.postgres import PostgresServer, postgres_bin
from oneroot.ops.labcontrol import LabControl, LabNodeRecord, write_control
from oneroot.ops.labha import MEMBERS, SUBNET, HaLab, Progress, node_name

HA_DIR = "ha"
WRITING = 20  # lines a node has written when the lab counts it up
# Each Debian package, and a program of it that the lab runs.
HA_PACKAGES = (("ceph-mon", "ceph-mon"), ("ceph-mgr", "ceph-mgr"), ("ceph-osd", "ceph-osd"),
               ("ceph-mds", "ceph-mds"), ("ceph-common", "ceph"), ("ceph-fuse", "ceph-fuse"),
               ("nfs-ganesha-ceph", "ganesha.nfsd"),
               ("nfs-ganesha-rados-grace", "ganesha-rados-grace"),
               ("keepalived", "keepalived"))
assert {program for _, program in HA_PACKAGES} >= set(DAEMONS)


def missing_ha_packages(which: object = shutil.which) -> list[str]:
    """The Debian packages `lab up --servers 2 --storage ceph` needs that are not installed
    (by the programs of theirs it runs)."""
    assert callable(which)
    missing = [package for package, program in HA_PACKAGES if which(program) is None]
    try:
        postgres_bin("initdb")
    except LabError:
        missing.append("postgresql-15")
    return missing


def check_ha_packages() -> None:
    missing = missing_ha_packages()
    if missing:
        raise LabError(f"the two-server lab needs packages that are not installed: "
                       f"{', '.join(missing)}",
                       hint=f"apt-get install {' '.join(missing)} (scripts/install-packages "
                            "installs them all)")


def ha_dir(workdir: Path) -> Path:
    return workdir / HA_DIR


@dataclass(slots=True, kw_only=True)
class HaLabRunner:
    """The two-server lab as the supervisor runs it: `start`, `boot` each node, `stop`."""

    workdir: Path
    cache_dir: Path
    progress: Progress = field(default=lambda _msg: None)
    lab: Lab | None = None
    ceph: CephCluster | None = None
    postgres: PostgresServer | None = None
    ha: HaLab | None = None
    _mount: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def home(self) -> Path:
        """A's home: where `oneroot status` reads every node (one database)."""
        return ha_dir(self.workdir) / "home-a"

    def start(self, ctl: LabControl, *, nodes: int) -> None:
        """Ceph, PostgreSQL, the servers; the nodes are recorded in `ctl`, not yet on."""
        check_ha_packages()
        root = ha_dir(self.workdir)
        shutil.rmtree(root, ignore_errors=True)  # what an earlier run left (lab down ran)
        root.mkdir(parents=True)
        self.progress("fetching the node kernel and busybox")
        kernel = fetch_kernel(None, cache_dir=self.cache_dir)
        busybox = fetch_busybox(cache_dir=self.cache_dir)
        self.progress("starting the lab network")
        self.lab = Lab.create(subnet=str(SUBNET), workdir=self.workdir,
                              router_advertisements=False)
        ctl.netns, ctl.lab_state_file = self.lab.netns, str(self.lab.state_file)
        ctl.home = str(self.home)
        write_control(ctl)
        self.progress("starting Ceph (mon, mgr, one OSD on a sparse file, MDS; "
                      "osd_memory_target 512 MiB): about a minute")
        self.ceph = CephCluster(netns=self.lab.netns, address=str(self.lab.server_address),
                                root=root / "ceph")
        self.ceph.start()
        self.progress(f"Ceph healthy in {self.ceph.timings.start_seconds:.0f} s; "
                      "starting PostgreSQL (initdb, pg_ctl)")
        self.postgres = PostgresServer(root=root / "postgres", netns=self.lab.netns)
        self.postgres.start()
        mount = self._mount.enter_context(self.ceph.mounted(root / "cephfs"))
        self.ha = HaLab(lab=self.lab, ceph=self.ceph, db_url=self.postgres.url(),
                        workdir=root, mount=mount, progress=self.progress)
        self.ha.prepare(kernel=kernel, busybox=busybox, nodes=nodes)
        self.ha.start_servers()
        ctl.servers = [f"{m.name}: host {m.host}, service {m.service}" for m in MEMBERS]
        ctl.nodes = [LabNodeRecord(name=node_name(i), firmware="bios", ephemeral=False,
                                   serial_log=str(root / "vms" / f"{node_name(i)}.serial.log"))
                     for i in range(1, nodes + 1)]

    def boot(self, node: str) -> QemuVm:
        assert self.ha is not None
        return self.ha.power_on(node)

    def wait_writing(self, nodes: list[str], *, timeout: float = 600) -> None:
        """Until each node has written its first lines into its layer in CephFS."""
        assert self.ha is not None
        ha = self.ha
        for node in nodes:
            ha.wait(functools.partial(ha.writing, node, WRITING), f"lines from {node}",
                    timeout)
            self.progress(f"{node} writes its lines (root on {MEMBERS[0].service})")

    def summary(self) -> str:
        """Which server holds each service address, and each node's lines so far."""
        assert self.ha is not None
        held = [f"{m.service} ({m.name}'s) on " + ("/".join(
            s.name for s in self.ha.servers.values() if s.holds(m.service)) or "none")
            for m in MEMBERS]
        lines = [f"{node} {len(self.ha.lines(node))} lines" for node in self.ha.vms]
        return "; ".join(held + lines)

    def stop(self) -> None:
        """Nodes and servers, CephFS, PostgreSQL, Ceph, the namespace: each even if an
        earlier one failed."""
        with contextlib.ExitStack() as later:
            if self.lab is not None:
                later.callback(self.lab.teardown)
            if self.ceph is not None:
                later.callback(self.ceph.stop)
            if self.postgres is not None:
                later.callback(self.postgres.stop)
            later.callback(self._mount.close)
            if self.ha is not None:
                later.callback(self.ha.stop)
        self.ha = self.postgres = self.ceph = self.lab = None
