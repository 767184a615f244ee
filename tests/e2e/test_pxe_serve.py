"""A real PXE ROM boots from `oneroot serve`: QEMU's iPXE, in a lab namespace, two ways.

(a) iPXE's DHCP gets the node's script URL; kernel and initramfs come over HTTP.
(b) the seed's way: pxelinux.0 → pxelinux.cfg/01-<mac> → kernel and initramfs over TFTP.

Each node's rendered command line carries a nonce; the marker initramfs prints it on the serial
console, so the marker proves that node's own boot file was used. The boot events prove which
files went over which protocol.
"""

from __future__ import annotations

import secrets
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from oneroot.initramfs.kernel import Kernel
from oneroot.initramfs.marker import marker_pattern
from oneroot.lab import Lab, QemuVm, list_netns
from oneroot.net import MacAddress

pytestmark = pytest.mark.e2e

ONEROOT = [sys.executable, "-m", "oneroot"]


@dataclass
class Served:
    lab: Lab
    home: Path
    log: Path

    def oneroot(self, *args: str) -> str:
        done = subprocess.run([*ONEROOT, "--home", str(self.home), *args], check=True,
                              capture_output=True, text=True)
        return done.stdout

    def events(self, node: str) -> list[tuple[str, str | None]]:
        conn = sqlite3.connect(self.home / "events.db")
        try:
            return [(k, f) for k, f in conn.execute(
                "SELECT kind, file FROM events WHERE node=? ORDER BY id", (node,))]
        finally:
            conn.close()


@pytest.fixture(scope="module")
def served(node_kernel: Kernel, marker_initramfs: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("qemu-system-x86_64 is missing: run scripts/bootstrap")
    tmp = tmp_path_factory.mktemp("pxe")
    home = tmp / "home"
    boot = tmp / "boot"
    boot.mkdir()
    shutil.copy(node_kernel.vmlinuz, boot / "vmlinuz")
    shutil.copy(marker_initramfs, boot / "initramfs.img")
    with Lab.create(subnet="10.0.0.0/24", workdir=tmp) as lab:
        served = Served(lab=lab, home=home, log=tmp / "serve.log")
        served.oneroot("init", "--server", str(lab.server_address), "--subnet", "10.0.0.0/24",
                       "--interface", lab.bridge, "--boot-dir", str(boot), "--image-root",
                       str(tmp))
        with served.log.open("wb") as log:
            proc = lab.popen_in_ns([*ONEROOT, "--home", str(home), "serve", "--no-nfs"],
                                   what="oneroot",
                                   stdout=log, stderr=subprocess.STDOUT)
            try:
                yield served
            finally:
                lab.stop_process(proc)
        netns = lab.netns
    assert netns not in list_netns()


def _boot(served: Served, name: str, mac: str, loader: str, tmp_path: Path) -> float:
    nonce = secrets.token_hex(8)
    served.oneroot("node", "add", name, "--mac", mac, "--set", f"bios_loader={loader}",
                   "--set", f"kernel_args=oneroot.marker={nonce}")
    with QemuVm(served.lab, served.lab.add_tap(), mac=MacAddress.parse(mac), name=name,
                workdir=tmp_path) as vm:
        vm.start()
        try:
            vm.wait_for(marker_pattern(nonce), timeout=150)
        except Exception:
            print(served.log.read_text()[-4000:])
            raise
        return vm.elapsed()


def test_ipxe_script_over_http(served: Served, tmp_path: Path) -> None:
    seconds = _boot(served, "node01", "52:54:00:0a:00:01", "ipxe", tmp_path)
    print(f"iPXE/HTTP marker boot: {seconds:.1f}s")
    events = served.events("node01")
    assert ("dhcp.ack", None) in [(k, None) for k, _ in events]
    http = [f for k, f in events if k == "http.done"]
    assert http[:3] == ["node01.ipxe", "vmlinuz", "initramfs.img"], events


def test_pxelinux_over_tftp_the_seeds_way(served: Served, tmp_path: Path) -> None:
    seconds = _boot(served, "node02", "52:54:00:0a:00:02", "pxelinux", tmp_path)
    print(f"pxelinux/TFTP marker boot: {seconds:.1f}s")
    tftp = [f for k, f in served.events("node02") if k == "tftp.done"]
    for wanted in ("pxelinux.0", "ldlinux.c32", "pxelinux.cfg/01-52-54-00-0a-00-02",
                   "vmlinuz", "initramfs.img"):
        assert wanted in tftp, tftp
    assert not [f for k, f in served.events("node02") if k == "http.done"]
