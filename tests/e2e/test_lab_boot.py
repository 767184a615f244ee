"""The lab's building blocks, end to end: a Debian kernel fetched without touching /boot, a
private static busybox, the marker initramfs, and QEMU booting it directly and over PXE."""

from __future__ import annotations

import lzma
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from oneroot.errors import BuildError
from oneroot.initramfs.busybox import Busybox, read_elf, verified_busybox
from oneroot.initramfs.cpio import Compression
from oneroot.initramfs.kernel import (
    Kernel,
    ModuleIndex,
    depmod,
    fetch_kernel,
    install_modules,
    module_closure,
)
from oneroot.initramfs.marker import (
    MARKER_INIT,
    build_marker_initramfs,
    marker_archive,
    marker_pattern,
)
from oneroot.lab import Lab, QemuVm, list_netns, random_mac

pytestmark = pytest.mark.e2e

NIC_MODULES = ["virtio_net", "virtio_pci"]
NFS_MODULES = ["nfsv4", "nfsv3", "overlay", "fuse"]


# -- kernel ------------------------------------------------------------------------------

def test_kernel_is_cached_and_outside_boot(node_kernel: Kernel, oneroot_cache: Path) -> None:
    assert node_kernel.vmlinuz.is_file() and node_kernel.vmlinuz.stat().st_size > 1_000_000
    assert node_kernel.root.is_relative_to(oneroot_cache)
    assert (node_kernel.modules_dir / "modules.dep").is_file()  # made by depmod -b
    assert node_kernel.package_version
    started = time.monotonic()
    again = fetch_kernel(node_kernel.version, cache_dir=oneroot_cache)
    assert time.monotonic() - started < 0.5
    assert again == node_kernel


def test_module_closure_lists_dependencies_first(node_kernel: Kernel) -> None:
    paths = module_closure(node_kernel.modules_dir, NIC_MODULES + NFS_MODULES)
    names = [p.name.split(".ko")[0] for p in paths]
    assert len(names) == len(set(names))
    assert all(p.is_file() for p in paths)
    for before, after in [("virtio", "virtio_net"), ("failover", "net_failover"),
                          ("sunrpc", "nfs"), ("nfs", "nfsv4"), ("lockd", "nfsv3")]:
        assert names.index(before) < names.index(after)


def test_builtin_modules_are_skipped_and_unknown_ones_refused(node_kernel: Kernel) -> None:
    index = ModuleIndex.load(node_kernel.modules_dir)
    assert "af_packet" in index.builtin  # udhcpc needs it; Debian builds it in
    assert index.closure(["af_packet"]) == []
    with pytest.raises(BuildError, match="no kernel module named"):
        index.closure(["no_such_module"])


def test_install_modules_regenerates_modules_dep(node_kernel: Kernel, tmp_path: Path) -> None:
    installed = install_modules(node_kernel.modules_dir, NIC_MODULES, dest_root=tmp_path)
    moddir = tmp_path / "lib/modules" / node_kernel.version
    dep = (moddir / "modules.dep").read_text()
    assert "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko" in dep
    assert len(dep.splitlines()) == len(installed)  # only the subset
    assert (moddir / "modules.builtin").is_file()
    shown = subprocess.run(["modprobe", "-d", str(tmp_path), "-S", node_kernel.version,
                            "--show-depends", "virtio_net"], capture_output=True, text=True,
                           check=True).stdout
    assert "net_failover.ko" in shown


def test_compressed_modules_are_decompressed(node_kernel: Kernel, tmp_path: Path) -> None:
    # A module tree as newer Debian kernels ship it: .ko.xz and .ko.zst.
    src_root = tmp_path / "src"
    src = src_root / "lib/modules" / node_kernel.version
    for rel in ModuleIndex.load(node_kernel.modules_dir).closure(["virtio_net"]):
        target = src / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        data = (node_kernel.modules_dir / rel).read_bytes()
        if "failover" in rel:
            subprocess.run(["zstd", "-q", "-o", f"{target}.zst", "-"], input=data, check=True)
        else:
            Path(f"{target}.xz").write_bytes(lzma.compress(data, format=lzma.FORMAT_XZ,
                                                           check=lzma.CHECK_CRC32))
    depmod(src_root, node_kernel.version)
    assert "virtio_net.ko.xz" in (src / "modules.dep").read_text()
    installed = install_modules(src, ["virtio_net"], dest_root=tmp_path / "out")
    assert {p.suffix for p in installed} == {".ko"}
    for path in installed:
        assert path.read_bytes()[:4] == b"\x7fELF"
    assert "virtio_net.ko:" in (tmp_path / "out/lib/modules" / node_kernel.version /
                                "modules.dep").read_text()


# -- busybox -----------------------------------------------------------------------------

def test_busybox_is_private_and_static(busybox: Busybox, oneroot_cache: Path) -> None:
    assert busybox.path.is_relative_to(oneroot_cache)
    assert read_elf(busybox.path).is_static
    assert {"sh", "mount", "poweroff", "udhcpc", "switch_root"} <= set(busybox.applets())


def test_a_dynamic_busybox_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    shutil.copy("/bin/ls", fake / "busybox")  # any dynamically linked binary
    with pytest.raises(BuildError, match="dynamically linked"):
        verified_busybox(tmp_path, "0")


# -- the marker initramfs ----------------------------------------------------------------

def test_marker_initramfs_is_small_and_reproducible(busybox: Busybox, tmp_path: Path) -> None:
    one = build_marker_initramfs(busybox, tmp_path / "a.img")
    two = build_marker_initramfs(busybox, tmp_path / "b.img")
    assert one.read_bytes() == two.read_bytes()
    assert one.stat().st_size < 2_000_000
    names = {e.path for e in marker_archive(busybox).entries()}
    assert {"init", "bin/busybox", "bin/sh", "dev/console"} <= names


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_marker_init_is_posix_sh(tmp_path: Path) -> None:
    script = tmp_path / "init"
    script.write_text(MARKER_INIT)
    subprocess.run(["shellcheck", "-s", "sh", str(script)], check=True)


def test_marker_boots_directly(node_kernel: Kernel, marker_initramfs: Path,
                               qemu_available: None, tmp_path: Path) -> None:
    nonce = secrets.token_hex(8)
    vm = QemuVm(kernel=node_kernel.vmlinuz, initrd=marker_initramfs,
                append=f"console=ttyS0 panic=-1 oneroot.marker={nonce}", workdir=tmp_path)
    with vm:
        vm.start()
        vm.wait_for(marker_pattern(nonce), timeout=60)
        assert vm.wait_exit(timeout=30) == 0  # /init powered off; -no-reboot ends QEMU
    print(f"direct marker boot: {vm.elapsed():.1f}s")


def test_marker_boots_zstd(node_kernel: Kernel, busybox: Busybox, qemu_available: None,
                           tmp_path: Path) -> None:
    image = build_marker_initramfs(busybox, tmp_path / "marker.zst",
                                   compression=Compression.ZSTD)
    nonce = secrets.token_hex(8)
    with QemuVm(kernel=node_kernel.vmlinuz, initrd=image, workdir=tmp_path,
                append=f"console=ttyS0 panic=-1 oneroot.marker={nonce}") as vm:
        vm.start()
        vm.wait_for(marker_pattern(nonce), timeout=60)


# -- PXE through the lab, with dnsmasq as the reference server -----------------------------

IPXE_SCRIPT = """#!ipxe
kernel tftp://{server}/vmlinuz console=ttyS0 panic=-1 oneroot.marker={nonce}
initrd tftp://{server}/initrd.img
boot
"""


def test_lab_pxe_boot_with_a_reference_server(node_kernel: Kernel, marker_initramfs: Path,
                                              lab_available: None, tmp_path: Path) -> None:
    """The lab itself (namespace, bridge, tap, RAs, QEMU's iPXE ROM), proven against dnsmasq;
    `oneroot serve` takes dnsmasq's place in the boot-services tests."""
    if shutil.which("dnsmasq") is None:
        pytest.skip("dnsmasq not installed")
    nonce = secrets.token_hex(8)
    tftp = tmp_path / "tftp"
    tftp.mkdir()
    shutil.copy(node_kernel.vmlinuz, tftp / "vmlinuz")
    shutil.copy(marker_initramfs, tftp / "initrd.img")
    with Lab.create(subnet="10.0.0.0/24", workdir=tmp_path) as lab:
        (tftp / "boot.ipxe").write_text(IPXE_SCRIPT.format(server=lab.server_address,
                                                            nonce=nonce))
        with (tmp_path / "dnsmasq.log").open("wb") as log:
            lab.popen_in_ns(
                # --no-daemon: stay root (the TFTP root is private) and log to stderr.
                ["dnsmasq", "--no-daemon", "--log-facility=-", "--port=0",
                 f"--interface={lab.bridge}", "--bind-interfaces",
                 "--dhcp-range=10.0.0.100,10.0.0.200,255.255.255.0,1h",
                 "--dhcp-boot=boot.ipxe", "--enable-tftp", f"--tftp-root={tftp}",
                 "--dhcp-option=encap:175,176,1b", f"--dhcp-leasefile={tmp_path / 'leases'}",
                 "--pid-file=", "--log-dhcp"],
                what="dnsmasq", stdout=log, stderr=subprocess.STDOUT)
        with QemuVm(lab, lab.add_tap(), mac=random_mac(), workdir=tmp_path) as vm:
            vm.start()
            vm.wait_for(marker_pattern(nonce), timeout=120)
            print(f"PXE marker boot: {vm.elapsed():.1f}s")
        netns = lab.netns
    assert netns not in list_netns()
