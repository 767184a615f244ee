"""A Debian 12 VM (the lab server disk: Debian's kernel, with the ceph, overlay, nfsd and NFS
client modules) on the session Ceph's lab network, for what this host's kernel cannot do: mount
CephFS with the kernel client, or NFS with the kernel client.

    with ceph_in_lab() as cluster, debian_vm(cluster, workdir) as vm:
        vm.ssh("...")                            # root in the VM, eth0 also on CEPH_SUBNET
        mount_cephfs(vm, cluster, "/mnt/cephfs") # the kernel client, msgr2 (crc)

Tools the VM lacks (fuse-overlayfs and its libfuse) come from this host on a second disk,
mounted at TOOLS (`/opt/host-tools`, run through its own loader path).
"""

from __future__ import annotations

import contextlib
import ipaddress
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from oneroot.ops.labserver import VmServerLab
from oneroot.ops.serverimage import ServerDisk, any_server_disk, image_disk
from oneroot.testing.cache import suite_cache_dir
from oneroot.testing.ceph import CEPH_SUBNET, CephCluster

TOOLS = "/opt/host-tools"
VM_ADDRESS = ipaddress.IPv4Interface("10.96.0.30/24")


def _ldd_closure(binary: Path) -> list[Path]:
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True,
                         check=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            libs.append(Path(parts[2]))
        elif parts and parts[0].startswith("/"):  # the loader
            libs.append(Path(parts[0]))
    return libs


def tools_disk(out: Path, *, binaries: Sequence[str] = ("fuse-overlayfs",),
               files: Sequence[Path] = ()) -> Path:
    """An ext4 disk with host `binaries` (bin/, their libraries in lib/) and `files` (top)."""
    tree = out.with_suffix(".tree")
    shutil.rmtree(tree, ignore_errors=True)
    (tree / "bin").mkdir(parents=True)
    (tree / "lib").mkdir()
    for name in binaries:
        found = shutil.which(name)
        if found is None:
            raise FileNotFoundError(f"{name} is not installed on this host")
        shutil.copy2(found, tree / "bin" / name)
        for lib in _ldd_closure(Path(found)):
            shutil.copy2(lib, tree / "lib" / lib.name)
    for path in files:
        shutil.copy2(path, tree / path.name)
    image_disk(tree, out, size="64M")
    shutil.rmtree(tree)
    return out


@contextlib.contextmanager
def debian_vm(cluster: CephCluster, workdir: Path, *, extra_disks: Sequence[Path] = (),
              address: ipaddress.IPv4Interface = VM_ADDRESS, memory_mib: int = 1024,
              disk: ServerDisk | None = None) -> Iterator[VmServerLab]:
    """The lab server VM on `cluster`'s lab bridge, with `address` on CEPH_SUBNET too and the
    first of `extra_disks` mounted at TOOLS; stopped on exit."""
    assert cluster.lab is not None
    assert address.network == ipaddress.IPv4Network(CEPH_SUBNET)
    vm = VmServerLab(workdir=workdir, cache_dir=suite_cache_dir(), progress=print,
                     server_memory_mib=memory_mib, extra_disks=tuple(extra_disks),
                     disk=disk or any_server_disk(suite_cache_dir(), progress=print))
    try:
        vm.start(network=cluster.lab)
        vm.ssh(f"ip addr add {address} dev eth0")
        if extra_disks:
            vm.ssh(f"mkdir -p {TOOLS} && mount -o ro /dev/vdb {TOOLS}")
        yield vm
    finally:
        vm.stop()


def admin_secret(cluster: CephCluster) -> str:
    for line in (cluster.root / "ceph.client.admin.keyring").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "key":
            return value.strip()
    raise ValueError("no key in the admin keyring")


def mount_cephfs(vm: VmServerLab, cluster: CephCluster, mountpoint: str) -> str:
    """CephFS at `mountpoint` in the VM with the kernel client (msgr2, crc mode)."""
    options = f"name=admin,secret={admin_secret(cluster)},ms_mode=crc"
    vm.ssh(f"modprobe ceph && mkdir -p {shlex.quote(mountpoint)} && mount -t ceph "
           f"{cluster.address}:{cluster.port}:/ {shlex.quote(mountpoint)} -o {options}")
    return vm.ssh(f"grep ' {mountpoint} ' /proc/mounts").stdout.replace(
        admin_secret(cluster), "<secret>").strip()
