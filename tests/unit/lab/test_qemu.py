"""The QEMU runner's command lines, the KVM probe, and waiting on a serial log."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from oneroot.errors import LabError
from oneroot.lab import qemu
from oneroot.lab.netns import Tap
from oneroot.lab.qemu import QemuVm, probe_firmware, run_probe
from oneroot.net import MacAddress

needs_qemu = pytest.mark.skipif(shutil.which(qemu.QEMU) is None, reason="QEMU not installed")
MAC = MacAddress.parse("52:54:00:12:34:56")


class FakeLab:
    """Enough of a Lab for command lines: a workdir."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir


def test_direct_boot_has_no_nic_and_passes_the_kernel(tmp_path: Path) -> None:
    vm = QemuVm(kernel=tmp_path / "vmlinuz", initrd=tmp_path / "initrd",
                append="console=ttyS0 panic=-1", accel="tcg", workdir=tmp_path)
    cmd = vm.command()
    assert cmd[cmd.index("-nic") + 1] == "none"  # else QEMU adds a user-mode NIC
    assert "-netdev" not in cmd and "-boot" not in cmd
    assert cmd[cmd.index("-kernel") + 1] == str(tmp_path / "vmlinuz")
    assert cmd[cmd.index("-initrd") + 1] == str(tmp_path / "initrd")
    assert cmd[cmd.index("-append") + 1] == "console=ttyS0 panic=-1"
    for flag in ("-nographic", "-no-reboot"):
        assert flag in cmd
    assert cmd[cmd.index("-monitor") + 1] == "none"
    assert cmd[cmd.index("-serial") + 1] == f"file:{vm.serial_log}"
    assert cmd[cmd.index("-pidfile") + 1] == str(vm.pid_file)
    assert cmd[cmd.index("-accel") + 1] == "tcg"


def test_network_boot_uses_the_tap_and_mac(tmp_path: Path) -> None:
    vm = QemuVm(FakeLab(tmp_path), Tap(name="tap3"), mac=MAC,  # type: ignore[arg-type]
                accel="tcg", memory_mib=256)
    cmd = vm.command()
    assert vm.boot == "network"
    assert cmd[cmd.index("-boot") + 1] == "n"
    assert cmd[cmd.index("-netdev") + 1] == \
        "tap,id=n0,ifname=tap3,script=no,downscript=no"
    assert cmd[cmd.index("-device") + 1] == "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56"
    assert cmd[cmd.index("-m") + 1] == "256"
    assert vm.workdir.parent == tmp_path  # logs live with the lab's


def test_inconsistent_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="needs a lab and a tap"):
        QemuVm(workdir=tmp_path)
    with pytest.raises(LabError, match="both a lab and a tap"):
        QemuVm(tap=Tap(name="tap0"), workdir=tmp_path)
    with pytest.raises(LabError, match="needs a kernel"):
        QemuVm(boot="kernel", workdir=tmp_path)


def test_pvm_means_tcg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "kvm_pvm").mkdir()
    monkeypatch.setattr(qemu, "PVM_MODULE", tmp_path / "kvm_pvm")
    qemu.probe_accel.cache_clear()
    try:
        assert qemu.probe_accel() == "tcg"
    finally:
        qemu.probe_accel.cache_clear()


def test_probe_firmware_has_its_reset_vector() -> None:
    image = probe_firmware()
    assert len(image) == 0x10000
    assert image[0xFFF0:0xFFF4] == bytes([0xB0, 0x31, 0xE6, 0xF4])


@needs_qemu
def test_probe_firmware_exits_qemu_under_tcg() -> None:
    # The same check that decides for KVM, run with TCG: proves the probe itself works.
    assert run_probe("tcg", timeout=20)


def test_wait_for_reports_the_console_when_the_vm_exits(tmp_path: Path) -> None:
    vm = QemuVm(kernel=tmp_path / "k", accel="tcg", workdir=tmp_path,
                qemu=sys.executable)
    # Stand-in for QEMU: writes a console line and exits.
    vm.command = lambda: [  # type: ignore[method-assign]
        sys.executable, "-c",
        f"open({str(vm.serial_log)!r}, 'w').write('booting\\nONEROOT-MARKER xyz\\n')"]
    vm.start()
    assert vm.wait_for(r"ONEROOT-MARKER (\S+)", timeout=10).group(1) == "xyz"
    with pytest.raises(LabError, match="exited") as info:
        vm.wait_for("never", timeout=10)
    assert "ONEROOT-MARKER xyz" in (info.value.hint or "")
    vm.stop()


def test_wait_for_times_out_and_stop_kills(tmp_path: Path) -> None:
    vm = QemuVm(kernel=tmp_path / "k", accel="tcg", workdir=tmp_path, qemu=sys.executable)
    vm.command = lambda: [  # type: ignore[method-assign]
        sys.executable, "-c", "import time; time.sleep(60)"]
    with vm:
        vm.start()
        with pytest.raises(LabError, match=r"within 0\.3s"):
            vm.wait_for("never", timeout=0.3)
    assert vm._proc is not None and vm._proc.returncode is not None


def test_wait_for_fails_fast_when_the_firmware_gives_up(tmp_path: Path) -> None:
    vm = QemuVm(kernel=tmp_path / "k", accel="tcg", workdir=tmp_path, qemu=sys.executable)
    vm.command = lambda: [  # type: ignore[method-assign]
        sys.executable, "-c",
        f"open({str(vm.serial_log)!r}, 'w').write('No bootable device.\\n');"
        "import time; time.sleep(60)"]
    with vm:
        vm.start()
        with pytest.raises(LabError, match="No bootable device"):
            vm.wait_for("ONEROOT-MARKER", timeout=30)
        assert vm.elapsed() < 20


def test_a_vm_with_a_bmc_is_wired_to_it_and_started_by_its_script(tmp_path: Path) -> None:
    vm = QemuVm(FakeLab(tmp_path), Tap(name="tap0"), mac=MAC,  # type: ignore[arg-type]
                accel="tcg", name="node01", workdir=tmp_path,
                bmc=qemu.BmcLink(ipmi_port=9101, serial_port=9301))
    cmd = vm.command()
    assert "-no-reboot" not in cmd  # a guest reboot stays in the VM; the BMC powers it off
    assert cmd[cmd.index("-serial") + 1] == "chardev:serial0"
    chardevs = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "-chardev"]
    assert (f"socket,id=serial0,host=127.0.0.1,port=9301,server=on,wait=off,"
            f"logfile={vm.serial_log},logappend=on") in chardevs
    assert "socket,id=ipmi0,host=127.0.0.1,port=9101,reconnect=1" in chardevs
    devices = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "-device"]
    assert "ipmi-bmc-extern,chardev=ipmi0,id=bmc0" in devices
    assert "isa-ipmi-kcs,bmc=bmc0" in devices
    script = vm.start_script()
    assert script.startswith("#!/bin/sh\n") and "\nexec qemu-system-x86_64 " in script
    assert f">>{vm.stderr_log} 2>&1" in script
    with pytest.raises(LabError):
        QemuVm(kernel=tmp_path / "k", workdir=tmp_path).start_script()
