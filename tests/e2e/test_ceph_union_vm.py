"""What the kernel does with CephFS under a union (issue 16 item 3), measured in a Debian 12 VM:
this host's kernel has neither a CephFS nor an NFS client.

One Ceph for the module (`ceph_in_lab`, stopped when the module ends) and one VM: the lab
server disk (Debian's 6.1 kernel: ceph, overlay, nfsd and the NFS client) on the Ceph lab
bridge at node01's address, CephFS mounted with the kernel client. Host tools the VM lacks
(fuse-overlayfs, strace) come on a second disk (`oneroot.testing.cephvm`).

1. `union=server` over CephFS: the probe (tests/data/cephvm/union_probe.py) mounts overlayfs
   as `oneroot.nfs.server_union` does, with upper and work dirs in CephFS; the kernel refuses
   (CephFS has no RENAME_WHITEOUT, and a remote upper must have it), with or without
   oneroot's options. A CephFS lower under a local upper works and knfsd exports it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from oneroot.ops.labserver import VmServerLab
from oneroot.testing.ceph import (
    DAEMONS,
    CephCluster,
    ceph_in_lab,
)
from oneroot.testing.cephvm import TOOLS, debian_vm, mount_cephfs, tools_disk

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, ceph-fuse)"),
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in (*DAEMONS, "ceph-fuse", "ganesha.nfsd",
                                               "fuse-overlayfs", "strace", "mkfs.ext4",
                                               "qemu-system-x86_64")),
        reason="needs ceph, nfs-ganesha-ceph, fuse-overlayfs, strace and QEMU"),
]

DATA = Path(__file__).parents[1] / "data" / "cephvm"
NODE01 = ipaddress.IPv4Interface("10.96.0.11/24")  # ceph_inventory's node01
CEPHFS = "/mnt/cephfs"


@dataclass(frozen=True, slots=True)
class CephVm:
    cluster: CephCluster
    vm: VmServerLab
    workdir: Path


@pytest.fixture(scope="module")
def ceph_vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephVm]:
    started = time.monotonic()
    workdir = tmp_path_factory.mktemp("ceph-vm")
    tools = tools_disk(workdir / "tools.img", binaries=("fuse-overlayfs", "strace"),
                       files=sorted(DATA.iterdir()))
    with ceph_in_lab() as cluster, debian_vm(cluster, workdir, extra_disks=[tools],
                                             address=NODE01) as vm:
        print(f"ceph-vm: Ceph and the VM up in {time.monotonic() - started:.1f} s; "
              f"{mount_cephfs(vm, cluster, CEPHFS)}")
        yield CephVm(cluster=cluster, vm=vm, workdir=workdir)


def _probe_steps(output: str) -> dict[str, dict[str, object]]:
    steps = {}
    for line in output.splitlines():
        if line.startswith("{"):
            step = json.loads(line)
            steps[step["step"]] = step
    return steps


def test_a_kernel_cephfs_mount_is_no_overlayfs_upper(ceph_vm: CephVm) -> None:
    done = ceph_vm.vm.ssh(f"mkdir -p /srv/probe && python3 {TOOLS}/union_probe.py {CEPHFS} "
                          "/srv/probe", check=False)
    print(done.stdout)
    steps = _probe_steps(done.stdout)
    assert done.returncode == 0, done.stderr
    # What CephFS lacks, straight on the kernel client: RENAME_WHITEOUT and O_TMPFILE.
    assert steps["trusted.* xattr set/get"]["ok"] and steps["mknod c 0 0 (whiteout)"]["ok"]
    assert steps["renameat2 RENAME_WHITEOUT"]["detail"] == "EINVAL: Invalid argument"
    assert not steps["O_TMPFILE"]["ok"]
    # The union oneroot's server_union mounts, upper and work in CephFS: refused by the
    # kernel, and not because of oneroot's options.
    for name in ("overlay: lower+upper+work on CephFS, index=on,nfs_export=on",
                 "overlay: lower+upper+work on CephFS, no options"):
        assert not steps[name]["ok"], steps[name]
        dmesg = "\n".join(map(str, steps[name]["dmesg"]))  # type: ignore[call-overload]
        assert "upper fs does not support RENAME_WHITEOUT" in dmesg, dmesg
        assert "upper fs missing required features" in dmesg, dmesg
    # A CephFS lower under a local upper: mounted, written, exported by knfsd, written
    # again over NFS.
    assert steps["overlay: lower on CephFS, upper+work on local ext4, "
                 "index=on,nfs_export=on"]["ok"]
    assert steps["union ops (CephFS lower, ext4 upper)"]["ok"]
    assert steps["knfsd (CephFS lower, ext4 upper): write, unlink, rename over NFS"]["ok"]
    assert steps["knfsd (plain CephFS dir): write, unlink, rename over NFS"]["ok"]
