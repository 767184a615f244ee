"""bench/union's boot row: the nodes are waited for together, each timed when its own console
shows the target. Waited for one after another, a node that was up first was timed when the
node before it was done (node02 at node01's time).

The VMs are `QemuVm`s running a stand-in for qemu-system-x86_64: a script that writes the
probe's lines to the serial file QEMU was given, after the delay its `-append` names, and
exits as a guest powering off does."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from oneroot.lab.qemu import QemuVm

UNION = Path(__file__).resolve().parents[3] / "bench" / "union"

FAKE_QEMU = r"""#!/bin/bash
# a stand-in for qemu-system-x86_64: the probe's lines after `-append delay=S`, then power off
while [ $# -gt 0 ]; do
    case "$1" in
        -serial) serial=${2#file:}; shift ;;
        -append) delay=${2#delay=}; shift ;;
    esac
    shift
done
sleep "$delay"
printf 'PROBE target=reached uptime=%s\nPROBE DONE\nreboot: Power down\n' "$delay" >>"$serial"
"""


def _bench_union() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_union", UNION / "bench_union.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_node_is_timed_when_its_own_target_is_reached(tmp_path: Path) -> None:
    qemu = tmp_path / "qemu-system-x86_64"
    qemu.write_text(FAKE_QEMU)
    qemu.chmod(0o755)
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"")
    vms = {}
    for name, delay in (("node01", 3.0), ("node02", 0.3)):  # node02 is up first
        vms[name] = QemuVm(kernel=kernel, append=f"delay={delay}", accel="tcg", name=name,
                           workdir=tmp_path, qemu=str(qemu))
        vms[name].start()
    try:
        booted = _bench_union().wait_booted(vms)
    finally:
        for vm in vms.values():
            vm.stop()
    assert booted["node01"]["target_s"] >= 3.0
    assert booted["node02"]["target_s"] < 2.0, booted["node02"]["target_s"]
    assert booted["node02"]["uptime_s"] == 0.3
