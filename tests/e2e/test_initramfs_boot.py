"""The node initramfs boots the Debian kernel in QEMU (no NIC, no server): the modules load,
the dhcp stage fails with the stage, the reason and the fix on the console, and the node waits
in a shell instead of panicking. The full NFS boot is the lab's union-root test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from oneroot.initramfs.builder import build_initramfs
from oneroot.initramfs.busybox import Busybox
from oneroot.initramfs.kernel import Kernel
from oneroot.lab import QemuVm

pytestmark = pytest.mark.e2e


def test_boot_without_network_stops_in_a_shell(node_kernel: Kernel, busybox: Busybox,
                                               qemu_available: None, tmp_path: Path) -> None:
    report = build_initramfs(kernel=node_kernel, busybox=busybox, out=tmp_path / "initrd.img",
                             compression="gzip", level=1)
    append = ("console=ttyS0,115200 panic=-1 ip=dhcp root=10.0.0.1:/srv/image:ro;tmpfs "
              "oneroot.break=layers softlevel=computenode "
              "oneroot.status=http://10.0.0.1:8080/api/v1/report")
    vm = QemuVm(kernel=node_kernel.vmlinuz, initrd=report.path, append=append,
                memory_mib=512, name="initramfs", workdir=tmp_path)
    with vm:
        vm.start()
        vm.wait_for(re.compile(r"^oneroot:dhcp# ", re.MULTILINE), timeout=55)
        elapsed = vm.elapsed()
    console = vm.serial_text()
    assert "oneroot: starting; root=10.0.0.1:/srv/image:ro;tmpfs runlevel=computenode" in console
    assert "modules not loaded" not in console
    assert "oneroot: stage dhcp failed: no network interface found" in console
    assert re.search(r"oneroot: fix: the NIC's driver is not in the initramfs", console)
    assert "shell at stage dhcp (stage dhcp failed)" in console
    assert "Kernel panic" not in console
    assert elapsed < 55
