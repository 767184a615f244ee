"""What the kernel does with CephFS under a union (issue 16 item 3), measured in a Debian 12 VM:
this host's kernel has neither a CephFS nor an NFS client.

The run's one Ceph (`ceph_cluster`: scripts/test runs every Ceph test in one stage) and one
VM for the module: the lab server disk (Debian's 6.1 kernel: ceph, overlay, nfsd and the NFS
client) on the Ceph lab bridge at node01's address, CephFS mounted with the kernel client;
the probe works in a CephFS directory of the module's own (`CephVm.base`). Host tools the VM
lacks (fuse-overlayfs, strace) come on a second disk (`oneroot.testing.cephvm`).

1. `union=server` over CephFS: the probe (tests/data/cephvm/union_probe.py) mounts overlayfs
   as `oneroot.nfs.server_union` does, with upper and work dirs in CephFS; the kernel refuses
   (CephFS has no RENAME_WHITEOUT, and a remote upper must have it), with or without
   oneroot's options. A CephFS lower under a local upper works and knfsd exports it.
2. `union=client` on ganesha-ceph: node01's layers from `oneroot serve`, its union as the
   initramfs makes it (tests/data/cephvm/fuse_probe.sh). Straight over the NFS lower layers
   every copy-up fails (FSAL_CEPH lists an NFSv4 ACL it cannot return); over the read-only
   xattr-less fuse-overlayfs the initramfs now puts between (`oneroot.union.lowerxattrs=off`)
   it works, and the node's writes are read back from CephFS.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from oneroot.model.paths import Paths
from oneroot.model.resolved import resolve_cluster
from oneroot.nfs.ganesha_ceph import grace_command
from oneroot.ops.labserver import VmServerLab
from oneroot.ops.nfs_serving import nfs_plan
from oneroot.ops.serverimage import SERVER_MAC
from oneroot.testing.ceph import (
    DAEMONS,
    CephCluster,
    ceph_inventory,
    retire,
    serve_ganesha_ceph,
    tiny_image,
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
HEAD = ipaddress.IPv4Address("10.96.0.2")  # the boot server (oneroot serve + ganesha-ceph)
CEPHFS = "/mnt/cephfs"


@dataclass(frozen=True, slots=True)
class CephVm:
    cluster: CephCluster
    vm: VmServerLab
    workdir: Path
    base: str  # this module's directory in the VM's CephFS mount (below CEPHFS)


@pytest.fixture(scope="module")
def ceph_vm(ceph_cluster: CephCluster, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[CephVm]:
    # The run's one Ceph served the tests before this module: still healthy?
    print(f"ceph-vm: Ceph HEALTH_OK after {ceph_cluster.wait_healthy()} s")
    started = time.monotonic()
    workdir = tmp_path_factory.mktemp("ceph-vm")
    tools = tools_disk(workdir / "tools.img", binaries=("fuse-overlayfs", "strace"),
                       files=sorted(DATA.iterdir()))
    with debian_vm(ceph_cluster, workdir, extra_disks=[tools], address=NODE01) as vm:
        mounted = mount_cephfs(vm, ceph_cluster, CEPHFS)
        base = f"{CEPHFS}/ceph-union-vm-{secrets.token_hex(4)}"
        vm.ssh(f"mkdir {base}")
        print(f"ceph-vm: the VM up and CephFS mounted in {time.monotonic() - started:.1f} s; "
              f"{mounted}; this module's directory {base}")
        yield CephVm(cluster=ceph_cluster, vm=vm, workdir=workdir, base=base)


def _probe_steps(output: str) -> dict[str, dict[str, object]]:
    steps = {}
    for line in output.splitlines():
        if line.startswith("{"):
            step = json.loads(line)
            steps[step["step"]] = step
    return steps


def test_a_kernel_cephfs_mount_is_no_overlayfs_upper(ceph_vm: CephVm) -> None:
    done = ceph_vm.vm.ssh(f"mkdir -p /srv/probe && python3 {TOOLS}/union_probe.py {ceph_vm.base} "
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


def _fuse_steps(output: str) -> dict[tuple[str, str], bool]:
    steps = {}
    for line in output.splitlines():
        if line.startswith(("OK   ", "FAIL ")):
            variant, _, rest = line[5:].partition(": ")
            steps[(variant, rest.split(": ")[0])] = line.startswith("OK")
    return steps


VARIANTS = ("-", "filter", "tmpfs", "tmpfs+filter")  # fuse_probe.sh's; v1..v4 in that order
WRITES = ("write /var/lib/probe", "mkdir /var/log/new", "append /var/log/old",
          "write /etc/probe", "append /etc/passwd", "rm /etc/os-release")


def test_a_client_union_writes_on_ganesha_ceph_through_xattr_less_lowers(
        ceph_vm: CephVm, tmp_path: Path) -> None:
    """node01's layers from ganesha-ceph (oneroot serve), mounted in the VM as its initramfs
    mounts them, then its union: copy-ups under /var and /etc, an append, a delete and a
    read-back through it, and the result read back from CephFS on the server side.

    FSAL_CEPH lists `system.nfs4_acl` on every file and cannot return it, and copy-up copies
    every listed xattr: so a union straight over the NFS lower layers (fuse-overlayfs for a
    persistent node, kernel overlayfs for an ephemeral one) fails every copy-up with
    EOPNOTSUPP, and one over a read-only `noxattrs=1` fuse-overlayfs of them (what the
    initramfs does with `oneroot.union.lowerxattrs=off`, which the server sets for
    ganesha-ceph) works. The knfsd control (`knfsd` variant of the probe) reads the ACL."""
    cluster, lab = ceph_vm.cluster, ceph_vm.cluster.lab
    assert lab is not None
    head = lab.add_client(f"{HEAD}/24")
    with cluster.mounted(tmp_path / "cephfs") as mount:
        base = mount / f"fuse-{os.getpid()}-{time.monotonic_ns()}"
        image = base / "images" / "tiny"
        tiny_image(image)
        (image / "var/log").mkdir(parents=True)
        (image / "var/log/old").write_text("old\n")
        inv = ceph_inventory(base, mount=mount, image=image, conf=cluster.conf, server=HEAD)
        node01 = inv.nodes["node01"]
        # serve pins node01's address to its MAC (netpin): the VM's is the lab server's
        inv = inv.replace(nodes={"node01": dataclasses.replace(
            node01, macs=(SERVER_MAC,), overrides={**node01.overrides, "ephemeral": False})})
        paths = Paths(home=tmp_path / "home")
        proc = serve_ganesha_ceph(lab, head.netns, paths, inv)
        try:
            done = ceph_vm.vm.ssh(f"sh {TOOLS}/fuse_probe.sh {HEAD} {image} "
                                  f"{base}/groups/compute {base}/systems/node01 "
                                  f"{' '.join(VARIANTS)}", check=False, timeout=300)
        finally:
            # Nothing left on the run's one Ceph for a later test: the head's address, its
            # ganesha's grace membership (a gone member keeps the others in grace) and its
            # CephFS sessions (held with their capabilities for a reclaim).
            lab.stop_process(proc, timeout=60)
            retire(lab, head.netns)
            plan = nfs_plan(resolve_cluster(inv), paths)
            assert plan.ctx.ceph is not None
            cluster.run(*grace_command(plan.ctx.ceph, "remove", plan.ctx.ceph.nodeid))
            cluster.evict_sessions(f"ganesha-{HEAD}-")
        print(done.stdout)
        steps = _fuse_steps(done.stdout)
        assert all(steps[("mount", f"mount {layer}")] for layer in ("image", "group", "node"))
        # What FSAL_CEPH does: the ACL the client lists is one it cannot read.
        assert "XATTR - image: system.nfs4_acl ENOTSUP" in done.stdout, done.stdout
        # Straight over the NFS lower layers: every copy-up fails (a new ganesha that returns
        # the ACL, or lists none, makes these pass: then the filter is no longer needed).
        for variant in ("-", "tmpfs"):
            assert steps[(variant, "union mounted")], done.stdout
            assert not any(steps[(variant, w)] for w in WRITES), done.stdout
        # Over the xattr-less read-only mount: all of it works, and the filter lists nothing.
        for variant in ("filter", "tmpfs+filter"):
            assert all(steps[(variant, w)] for w in (*WRITES, "read back /var/lib/probe")), \
                done.stdout
            assert f"XATTR {variant} filter: listxattr ENOTSUP" in done.stdout, done.stdout
        # The persistent node's writes are in its layer in CephFS (read on the server side).
        upper = base / "systems" / "node01" / f"v{VARIANTS.index('filter') + 1}" / "upper"
        assert (upper / "var/lib/probe").read_text() == "probe\n"
        assert (upper / "var/log/old").read_text() == "old\nmore\n"
        assert (upper / "var/log/new").is_dir() and (upper / "etc/probe").exists()
        assert (upper / "etc/passwd").read_text().endswith("x:x:1:1::/:/bin/sh\n")
        # the delete: a whiteout (fuse-overlayfs writes `.wh.NAME` where mknod is refused)
        assert (upper / "etc/.wh.os-release").exists() or \
            (upper / "etc/os-release").is_char_device()
