"""UEFI VMs: OVMF's code read-only and shared, a variable store per VM, and no option ROM on
the NIC (so OVMF's own PXE client, not QEMU's iPXE ROM, asks DHCP as UEFI firmware)."""

from __future__ import annotations

from pathlib import Path

import pytest

from oneroot.errors import LabError
from oneroot.lab import qemu
from oneroot.lab.netns import Tap
from oneroot.lab.qemu import QemuVm
from oneroot.net import MacAddress

MAC = MacAddress.parse("52:54:00:12:34:56")


class FakeLab:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir


@pytest.fixture
def ovmf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "OVMF"
    directory.mkdir()
    (directory / qemu.OVMF_CODE).write_bytes(b"code")
    (directory / qemu.OVMF_VARS).write_bytes(b"vars")
    monkeypatch.setattr(qemu, "OVMF_DIR", directory)
    return directory


def test_uefi_command_line(tmp_path: Path, ovmf: Path) -> None:
    vm = QemuVm(FakeLab(tmp_path), Tap(name="tap0"), mac=MAC,  # type: ignore[arg-type]
                accel="tcg", firmware="uefi", name="node01", workdir=tmp_path)
    cmd = vm.command()
    drives = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "-drive"]
    assert drives == [
        f"if=pflash,format=raw,unit=0,readonly=on,file={ovmf / qemu.OVMF_CODE}",
        f"if=pflash,format=raw,unit=1,file={tmp_path / ('node01.' + qemu.OVMF_VARS)}"]
    assert cmd[cmd.index("-device") + 1] == \
        "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,romfile="
    assert cmd[cmd.index("-boot") + 1] == "n"


def test_bios_command_line_is_unchanged(tmp_path: Path) -> None:
    vm = QemuVm(FakeLab(tmp_path), Tap(name="tap0"), mac=MAC,  # type: ignore[arg-type]
                accel="tcg", workdir=tmp_path)
    cmd = vm.command()
    assert "-drive" not in cmd
    assert cmd[cmd.index("-device") + 1] == "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56"


def test_missing_ovmf_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(LabError) as err:
        qemu.find_ovmf(tmp_path)
    assert err.value.hint == "apt-get install ovmf"
