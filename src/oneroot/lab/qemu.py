"""QEMU VMs for the lab: PXE boots through QEMU's iPXE ROM, or direct kernel boots.

Owns one `qemu-system-x86_64` process per `QemuVm`: its command line, serial log, PID file and
its end. Every wait has a wall-clock timeout; the process is killed by PID, never by name.

    vm = QemuVm(lab, lab.add_tap(), mac=MacAddress.parse("52:54:00:00:00:01"))   # -boot n
    with vm:
        vm.start()
        vm.wait_for(r"ONEROOT-MARKER abc", timeout=120)

Acceleration: KVM only where it is real. On PVM hosts (/sys/module/kvm_pvm) `-accel kvm`
hangs or aborts, so `probe_accel()` checks that, then boots a 7-byte firmware under KVM that
exits QEMU through isa-debug-exit; anything else means TCG.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

from oneroot.errors import ExternalToolError, LabError
from oneroot.lab.netns import Lab, Tap, terminate_process
from oneroot.net import MacAddress

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
PVM_MODULE = Path("/sys/module/kvm_pvm")
ROM_DIRS = (Path("/usr/share/qemu"), Path("/usr/lib/ipxe/qemu"))
# QEMU's default option ROM per NIC model (what `-boot n` runs).
IPXE_ROMS = {
    "virtio-net-pci": "efi-virtio.rom",
    "e1000": "efi-e1000.rom",
    "e1000e": "efi-e1000e.rom",
    "rtl8139": "efi-rtl8139.rom",
}
_DEBUG_EXIT_PORT = 0xF4
_DEBUG_EXIT_VALUE = 0x31  # QEMU exits with (value << 1) | 1
_PROBE_EXIT_CODE = (_DEBUG_EXIT_VALUE << 1) | 1

BootMode = Literal["network", "kernel"]
Firmware = Literal["bios", "uefi"]
# Debian's `ovmf`: the code is shared read-only, each VM gets its own copy of the variable store.
# The plain (not .secboot/.ms) builds with empty variables: Secure Boot off, as Debian's
# ipxe.efi is unsigned.
OVMF_DIR = Path("/usr/share/OVMF")
OVMF_CODE = "OVMF_CODE_4M.fd"
OVMF_VARS = "OVMF_VARS_4M.fd"
# The guest's last lines: systemd-shutdown's (or `systemctl poweroff -ff`'s), then the kernel's.
FINAL_LINE = re.compile(r"^(Powering off\.|Rebooting\.|"
                        r"\[ *[0-9.]+\] reboot: (Power down|Restarting system))", re.M)
# Console lines after which the awaited line will not come: fail at once, not at the timeout.
BOOT_FAILURES = re.compile(r"No bootable device|Kernel panic - not syncing")


def probe_firmware() -> bytes:
    """A 64 KiB BIOS image whose reset vector writes to isa-debug-exit and halts."""
    code = bytes([0xB0, _DEBUG_EXIT_VALUE,  # mov al, 0x31
                  0xE6, _DEBUG_EXIT_PORT,  # out 0xf4, al
                  0xF4,  # hlt
                  0xEB, 0xFD])  # jmp back to hlt
    image = bytearray(b"\xf4" * 0x10000)
    image[0xFFF0:0xFFF0 + len(code)] = code  # the CPU starts at 0xFFFF0 (top 16 bytes)
    return bytes(image)


def run_probe(accel: str, *, timeout: float = 10, qemu: str = QEMU) -> bool:
    """Boot the probe firmware with `accel`; True if QEMU exited the way it asks."""
    with tempfile.TemporaryDirectory(prefix="oneroot-probe-") as tmp:
        bios = Path(tmp) / "probe.bin"
        bios.write_bytes(probe_firmware())
        cmd = [qemu, "-accel", accel, "-nodefaults", "-display", "none", "-monitor", "none",
               "-serial", "none", "-m", "16", "-bios", str(bios),
               "-device", f"isa-debug-exit,iobase={_DEBUG_EXIT_PORT:#x},iosize=1"]
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        except FileNotFoundError as exc:
            raise ExternalToolError(f"{qemu} is not installed",
                                    hint="apt-get install qemu-system-x86") from exc
        try:
            return proc.wait(timeout) == _PROBE_EXIT_CODE
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return False


@functools.cache
def probe_accel(qemu: str = QEMU) -> str:
    """`kvm` where KVM really works, else `tcg`. Cached for the process."""
    if PVM_MODULE.exists():
        log.info("qemu.accel accel=tcg reason=pvm")
        return "tcg"
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
    except OSError as exc:
        log.info("qemu.accel accel=tcg reason=%s", exc.strerror)
        return "tcg"
    os.close(fd)
    accel = "kvm" if run_probe("kvm", qemu=qemu) else "tcg"
    log.info("qemu.accel accel=%s reason=probe", accel)
    return accel


def find_ipxe_rom(nic_model: str = "virtio-net-pci") -> Path:
    """The iPXE option ROM QEMU will run for `nic_model` (package ipxe-qemu)."""
    name = IPXE_ROMS.get(nic_model)
    if name is None:
        raise LabError(f"no known iPXE ROM for NIC model {nic_model!r}",
                       hint=f"use one of {', '.join(sorted(IPXE_ROMS))}")
    for directory in ROM_DIRS:
        if (directory / name).exists():
            return (directory / name).resolve()
    raise LabError(f"QEMU's iPXE ROM {name} is missing", hint="apt-get install ipxe-qemu")


def find_ovmf(ovmf_dir: Path | None = None) -> tuple[Path, Path]:
    """OVMF's code and variable-store templates (package ovmf)."""
    ovmf_dir = ovmf_dir or OVMF_DIR
    code, variables = ovmf_dir / OVMF_CODE, ovmf_dir / OVMF_VARS
    for path in (code, variables):
        if not path.exists():
            raise LabError(f"UEFI firmware {path} is missing", hint="apt-get install ovmf")
    return code, variables


@dataclass(frozen=True, slots=True, kw_only=True)
class BmcLink:
    """A VM's wires to its BMC (an ipmi_sim in the same namespace, on its loopback): QEMU's
    ipmi-bmc-extern connects to `ipmi_port`, where ipmi_sim waits (`serial 15 … codec VM`), and
    the serial line listens on `serial_port` for ipmi_sim's SOL (`sol "tcp:…"`)."""

    ipmi_port: int
    serial_port: int


def random_mac() -> MacAddress:
    """A MAC in QEMU's locally administered range 52:54:00:…"""
    return MacAddress(b"\x52\x54\x00" + secrets.token_bytes(3))


class QemuVm:
    """One VM. Network boot (`-boot n`) when no kernel is given, else a direct kernel boot.

    With a lab and a tap, QEMU runs inside the lab's namespace on that tap; without them the VM
    has no NIC at all (`-nic none`: QEMU would otherwise add a user-mode one).

    `firmware="uefi"` boots OVMF instead of SeaBIOS, and the NIC gets no option ROM
    (`romfile=`): QEMU's EFI ROM is iPXE itself, which would ask DHCP as iPXE and skip the
    loader. Without it, OVMF's own VirtioNetDxe and PXE client ask as UEFI firmware
    (option 93 = 7) and load the loader DHCP names (ipxe.efi) over TFTP, as real hardware does.
    """

    def __init__(self, lab: Lab | None = None, tap: Tap | None = None, *,
                 mac: MacAddress | None = None, boot: BootMode | None = None,
                 kernel: Path | None = None, initrd: Path | None = None, append: str = "",
                 memory_mib: int = 512, cpus: int = 1, accel: str | None = None,
                 nic_model: str = "virtio-net-pci", firmware: Firmware = "bios",
                 name: str = "vm", address: ipaddress.IPv4Address | None = None,
                 workdir: Path | None = None, extra_args: Sequence[str] = (),
                 bmc: BmcLink | None = None, qemu: str = QEMU) -> None:
        if (lab is None) != (tap is None):
            raise LabError("a VM on the network needs both a lab and a tap")
        self.boot: BootMode = boot or ("kernel" if kernel is not None else "network")
        if self.boot == "kernel" and kernel is None:
            raise LabError("a direct boot needs a kernel")
        if self.boot == "network" and tap is None:
            raise LabError("a network boot needs a lab and a tap")
        self.lab = lab
        self.tap = tap
        self.mac = mac or random_mac()
        # With an address, the bridge port lets through only this MAC and address.
        self.address = address
        self.kernel = kernel
        self.initrd = initrd
        self.append = append
        self.memory_mib = memory_mib
        self.cpus = cpus
        self.accel = accel
        self.nic_model = nic_model
        self.firmware: Firmware = firmware
        self.name = name
        self.extra_args = tuple(extra_args)
        self.bmc = bmc
        self.qemu = qemu
        if workdir is None:
            base = lab.workdir if lab is not None else None
            workdir = Path(tempfile.mkdtemp(prefix=f"oneroot-{name}-", dir=base))
        self.workdir = workdir
        self.serial_log = workdir / f"{name}.serial.log"
        self.stderr_log = workdir / f"{name}.qemu.log"
        self.pid_file = workdir / f"{name}.pid"
        self.ovmf_vars = workdir / f"{name}.{OVMF_VARS}"
        self._proc: subprocess.Popen[bytes] | None = None
        self.started_at: float | None = None

    def command(self) -> list[str]:
        """The qemu command line (without the `ip netns exec` prefix)."""
        cmd = [self.qemu, "-name", self.name, "-accel", self.accel or probe_accel(self.qemu),
               "-m", str(self.memory_mib), "-smp", str(self.cpus),
               "-nographic", *self._serial_args(), "-monitor", "none",
               "-pidfile", str(self.pid_file)]
        if self.firmware == "uefi":
            code, _ = find_ovmf()
            cmd += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                    "-drive", f"if=pflash,format=raw,unit=1,file={self.ovmf_vars}"]
        if self.tap is not None:
            rom = ",romfile=" if self.firmware == "uefi" else ""
            cmd += ["-netdev", f"tap,id=n0,ifname={self.tap.name},script=no,downscript=no",
                    "-device", f"{self.nic_model},netdev=n0,mac={self.mac}{rom}"]
        else:
            cmd += ["-nic", "none"]
        if self.boot == "network":
            cmd += ["-boot", "n"]
        else:
            assert self.kernel is not None
            cmd += ["-kernel", str(self.kernel)]
            if self.initrd is not None:
                cmd += ["-initrd", str(self.initrd)]
            if self.append:
                cmd += ["-append", self.append]
        return [*cmd, *self.extra_args]

    def _serial_args(self) -> list[str]:
        """Without a BMC: the console to a file, and a guest reboot ends QEMU (the tests'
        probes power off or reboot to say they are done). With one: the console listens for
        the BMC's SOL and is logged to the same file, and a reboot stays in the VM, as on
        hardware (the BMC powers it off)."""
        if self.bmc is None:
            return ["-serial", f"file:{self.serial_log}", "-no-reboot"]
        return ["-chardev", f"socket,id=serial0,host=127.0.0.1,port={self.bmc.serial_port},"
                f"server=on,wait=off,logfile={self.serial_log},logappend=on",
                "-serial", "chardev:serial0",
                "-chardev", f"socket,id=ipmi0,host=127.0.0.1,port={self.bmc.ipmi_port},"
                "reconnect=1",
                "-device", "ipmi-bmc-extern,chardev=ipmi0,id=bmc0",
                "-device", "isa-ipmi-kcs,bmc=bmc0"]

    def start_script(self) -> str:
        """The script the BMC runs to power the VM on (ipmi_sim's `startcmd`): QEMU is then
        its child, and its power state is whether QEMU runs."""
        if self.bmc is None:
            raise LabError(f"VM {self.name} has no BMC to start it")
        lines = ["#!/bin/sh",
                 f"# generated by oneroot lab: {self.name}'s power on (ipmi_sim's startcmd)"]
        if self.firmware == "uefi":
            lines.append(shlex.join(["cp", str(find_ovmf()[1]), str(self.ovmf_vars)]))
        elif self.boot == "network":
            find_ipxe_rom(self.nic_model)
        lines.append(f"exec {shlex.join(self.command())} >>{shlex.quote(str(self.stderr_log))}"
                     " 2>&1")
        return "\n".join(lines) + "\n"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        """Whether QEMU was started and has not exited."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self._proc is not None:
            raise LabError(f"VM {self.name} already started")
        if shutil.which(self.qemu) is None:
            raise ExternalToolError(f"{self.qemu} is not installed",
                                    hint="apt-get install qemu-system-x86")
        if self.firmware == "uefi":
            # A fresh variable store per start: no boot entries left from an earlier run.
            shutil.copyfile(find_ovmf()[1], self.ovmf_vars)
        elif self.boot == "network":
            find_ipxe_rom(self.nic_model)
        for path in (self.serial_log, self.pid_file):
            path.unlink(missing_ok=True)
        cmd = self.command()
        if self.lab is not None and self.tap is not None and self.address is not None:
            self.lab.guard_port(self.tap, mac=self.mac, address=self.address)
        self.started_at = time.monotonic()
        with self.stderr_log.open("wb") as err:
            if self.lab is not None:
                self._proc = self.lab.popen_in_ns(cmd, what=f"qemu:{self.name}",
                                                  stdout=err, stderr=subprocess.STDOUT)
            else:
                self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err,
                                              stderr=subprocess.STDOUT)
        log.info("qemu.start vm=%s pid=%d boot=%s firmware=%s mac=%s", self.name,
                 self._proc.pid, self.boot, self.firmware, self.mac)

    def serial_text(self) -> str:
        try:
            return self.serial_log.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, pattern: str | re.Pattern[str], *, timeout: float,
                 fail_on: re.Pattern[str] | None = BOOT_FAILURES,
                 poll: float = 0.1) -> re.Match[str]:
        """Wait until the serial console shows `pattern`; LabError on timeout, on VM exit, or
        as soon as the console shows `fail_on` (by default: firmware or kernel gave up)."""
        if self._proc is None:
            raise LabError(f"VM {self.name} was not started")
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            exited = self._proc.poll()
            text = self.serial_text()
            m = regex.search(text)
            if m:
                return m
            failed = fail_on.search(text) if fail_on is not None else None
            if failed:
                raise LabError(f"VM {self.name}: {failed.group(0)!r} on the serial console "
                               f"before /{regex.pattern}/", hint=self._diagnosis())
            if exited is not None:
                raise LabError(
                    f"VM {self.name} exited ({exited}) before /{regex.pattern}/ appeared",
                    hint=self._diagnosis())
            if time.monotonic() >= deadline:
                raise LabError(
                    f"VM {self.name}: no /{regex.pattern}/ on the serial console within "
                    f"{timeout:g}s", hint=self._diagnosis())
            time.sleep(poll)

    def wait_exit(self, *, timeout: float) -> int:
        """Wait for QEMU to end by itself (the guest powered off); LabError on timeout."""
        if self._proc is None:
            raise LabError(f"VM {self.name} was not started")
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"VM {self.name} still runs after {timeout:g}s",
                           hint=self._diagnosis()) from exc

    def wait_powered_off(self, *, timeout: float, grace: float = 30) -> bool:
        """Wait for the guest to power off (or restart: the lab runs QEMU with -no-reboot).

        Debian 6.1's virtio_net can soft-lock in virtnet_poll after the guest's last
        "Powering off." / "Rebooting." (seen under TCG while other nodes kept the bridge busy):
        the guest has finished its shutdown but QEMU never exits. Once that last line is on the
        console, QEMU gets `grace` seconds and is then stopped. True if the guest exited by
        itself; LabError if it never reached its last line within `timeout`.
        """
        if self._proc is None:
            raise LabError(f"VM {self.name} was not started")
        deadline = time.monotonic() + timeout
        final_since: float | None = None
        while True:
            try:
                self._proc.wait(1)
                return True
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if final_since is None and FINAL_LINE.search(self.serial_text()):
                final_since = now
            if final_since is not None and now - final_since > grace:
                log.warning("qemu.shutdown_hang vm=%s grace=%gs: the guest finished its "
                            "shutdown but QEMU did not exit; stopping it", self.name, grace)
                self.stop()
                return False
            if now > deadline:
                raise LabError(f"VM {self.name} still runs after {timeout:g}s",
                               hint=self._diagnosis())

    def stop(self, *, timeout: float = 5) -> None:
        """Kill QEMU by PID (SIGTERM, then SIGKILL). Idempotent."""
        if self._proc is None:
            return
        if self.lab is not None:
            self.lab.stop_process(self._proc, timeout=timeout)
        else:
            terminate_process(self._proc.pid, None, timeout=timeout, popen=self._proc)
        log.info("qemu.stop vm=%s pid=%d code=%s", self.name, self._proc.pid,
                 self._proc.returncode)

    def elapsed(self) -> float:
        return 0.0 if self.started_at is None else time.monotonic() - self.started_at

    def _diagnosis(self) -> str:
        tail = "\n".join(self.serial_text().splitlines()[-15:])
        try:
            qemu_err = self.stderr_log.read_text(errors="replace").strip()
        except OSError:
            qemu_err = ""
        parts = [f"serial log {self.serial_log}, last lines:\n{tail or '(empty)'}"]
        if qemu_err:
            parts.append(f"qemu said: {qemu_err[-800:]}")
        return "\n".join(parts)

    def __enter__(self) -> QemuVm:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
