"""A lab node's BMC: OpenIPMI's `ipmi_sim` in the lab's namespace, answering IPMI 2.0 (RMCP+)
on its own address of the management network, powering its QEMU VM on and off (QEMU is its
`startcmd` child: power on starts it, power off stops it), wired to the VM's ipmi-bmc-extern,
and carrying the VM's serial line as serial-over-LAN.

    bmc = LabBmc(lab, vm, address=IPv4Address("10.0.1.11"), user="admin", password=pw,
                 directory=workdir / "bmc" / "node01")
    bmc.start()      # the BMC runs; the VM stays off until someone powers it on
"""

from __future__ import annotations

import ipaddress
import logging
import shutil
import subprocess
import time
from pathlib import Path

from oneroot.errors import ExternalToolError, LabError
from oneroot.lab.netns import Lab
from oneroot.lab.qemu import QemuVm
from oneroot.render.ipmisim import IPMI_PORT, SIM_EMU, IpmiSimConfig, render_lan_conf

log = logging.getLogger(__name__)

IPMI_SIM = "ipmi_sim"


class LabBmc:
    def __init__(self, lab: Lab, vm: QemuVm, *, address: ipaddress.IPv4Address, user: str,
                 password: str, directory: Path) -> None:
        if vm.bmc is None:
            raise LabError(f"VM {vm.name} has no BMC link")
        self.lab = lab
        self.vm = vm
        self.address = address
        self.user = user
        self.password = password
        self.dir = directory
        self.log_file = directory / "ipmi_sim.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def where(self) -> str:
        return f"{self.address}:{IPMI_PORT}"

    def config(self) -> IpmiSimConfig:
        assert self.vm.bmc is not None
        return IpmiSimConfig(name=self.vm.name, lan=self.address, user=self.user,
                             password=self.password, startcmd=str(self.dir / "power-on"),
                             vm_port=self.vm.bmc.ipmi_port,
                             sol=f"tcp:127.0.0.1:{self.vm.bmc.serial_port}")

    def write_files(self) -> None:
        """lan.conf (it holds the password: 0600 in a 0700 directory), the emulator's
        commands, the VM's power-on script, ipmi_sim's persistent state directory."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        (self.dir / "state").mkdir(exist_ok=True)
        start = self.dir / "power-on"
        start.write_text(self.vm.start_script())
        start.chmod(0o700)
        conf = self.dir / "lan.conf"
        conf.touch(mode=0o600)
        conf.chmod(0o600)
        conf.write_text(render_lan_conf(self.config()))
        (self.dir / "sim.emu").write_text(SIM_EMU)

    def start(self, *, timeout: float = 15) -> None:
        """Start ipmi_sim in the namespace, on the BMC's management address; wait until it
        takes its UDP port. The VM is off."""
        if shutil.which(IPMI_SIM) is None:
            raise ExternalToolError("ipmi_sim is not installed", hint="apt-get install openipmi")
        self.lab.add_management_address(self.address)
        self.write_files()
        self.vm.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            self._proc = self.lab.popen_in_ns(
                [IPMI_SIM, "-n", "-c", str(self.dir / "lan.conf"), "-f",
                 str(self.dir / "sim.emu"), "-s", str(self.dir / "state")],
                what=f"bmc:{self.vm.name}", stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self._listening():
            if self._proc.poll() is not None:
                raise LabError(f"the BMC of {self.vm.name} (ipmi_sim) exited",
                               hint=f"see {self.log_file}")
            if time.monotonic() > deadline:
                raise LabError(f"the BMC of {self.vm.name} does not listen on {self.where}",
                               hint=f"see {self.log_file}")
            time.sleep(0.1)
        log.info("lab.bmc_up node=%s bmc=%s pid=%d", self.vm.name, self.where, self._proc.pid)

    def _listening(self) -> bool:
        out = self.lab.run_in_ns(["ss", "-Hlun", f"src {self.address}:{IPMI_PORT}"],
                                 check=False).stdout
        return bool(out.strip())

    def vm_pid(self) -> int | None:
        """The running VM's QEMU (None when off)."""
        return running_vm_pid(self.vm.pid_file, self.vm.name)

    def wait_vm_pid(self, *, timeout: float = 15) -> int:
        """The VM's QEMU once the BMC has started it (after a power on)."""
        deadline = time.monotonic() + timeout
        while (pid := self.vm_pid()) is None:
            if time.monotonic() > deadline:
                raise LabError(f"the BMC of {self.vm.name} did not start its VM",
                               hint=f"see {self.vm.stderr_log} and {self.log_file}")
            time.sleep(0.1)
        return pid

    def stop(self) -> None:
        """Stop ipmi_sim (its VM, if on, goes with the namespace's other processes)."""
        if self._proc is not None:
            self.lab.stop_process(self._proc)
            self._proc = None


def running_vm_pid(pid_file: Path, name: str) -> int | None:
    """The QEMU of VM `name` from its PID file, if that process runs and is that VM's (a
    BMC starts a new one at each power on)."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if f"-name\0{name}\0".encode() in cmdline else None
