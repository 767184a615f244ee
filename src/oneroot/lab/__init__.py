"""The virtual lab: a network namespace with a bridge and taps, router advertisements, and
QEMU VMs that PXE-boot or direct-boot on it, with serial logs, timeouts and PID-based cleanup.

    with Lab.create(subnet="10.0.0.0/24") as lab:
        tap = lab.add_tap()
        with QemuVm(lab, tap, mac=mac) as vm:
            vm.start()
            vm.wait_for(r"ONEROOT-MARKER abc", timeout=120)
"""

from oneroot.lab.netns import Client, Lab, LabState, Tap, list_netns
from oneroot.lab.qemu import QemuVm, find_ipxe_rom, probe_accel, random_mac

__all__ = [
    "Client",
    "Lab",
    "LabState",
    "QemuVm",
    "Tap",
    "find_ipxe_rom",
    "list_netns",
    "probe_accel",
    "random_mac",
]
