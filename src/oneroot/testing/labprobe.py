"""Probes for lab nodes: a script run by the node's own systemd after boot, placed in the
node's layer with `oneroot overlay put`, printing `PROBE key=value` lines on the serial console.

The end-to-end tests and benchmarks read a booted node through these (the lab's consoles are
write-only logs). Units are enabled with a `Wants=` drop-in: systemd ignores regular files in
`*.wants/`, and overlay tooling writes files, not links.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

from oneroot.ops.lab import LabCluster

PROBE_PATH = "/usr/local/sbin/oneroot-probe"
# The probe runs after basic.target; a bench that times the runlevel orders it after
# multi-user.target instead (`install_probe(after=AFTER_RUNLEVEL)`), as oneroot-runlevel.service.
AFTER_BASIC = "basic.target oneroot-booted.service"
AFTER_RUNLEVEL = "multi-user.target oneroot-booted.service"
PROBE_UNIT = """[Unit]
Description=oneroot lab probe
After=basic.target oneroot-booted.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/oneroot-probe
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
"""
WANTS_PROBE = "[Unit]\nWants=oneroot-probe.service\n"
# Shell functions for probe scripts (bash): `say K=V` to the console, `sha FILE` (or
# "missing"), `fuse_pids` (the lab image has no pgrep: argv[0] of every process).
PROBE_LIB = r"""say() { echo "PROBE $*" > /dev/ttyS0; }
sha() { if [ -e "$1" ]; then sha256sum "$1" | cut -c1-64; else echo missing; fi; }
fuse_pids() {
  for p in /proc/[0-9]*; do
    case "$(tr '\0' '\n' < "$p/cmdline" 2>/dev/null | head -n 1)" in
    *fuse-overlayfs) echo "${p#/proc/}" ;;
    esac
  done
}
"""
# The end of a persistence probe: what the last boot left (persist, issue_net), then a write
# and a deletion for the next boot to find (wrote, deleted), synced, and power off.
PERSIST_AND_POWEROFF = r"""if [ -e /root/persist ]; then say persist="$(tr ' ' _ < /root/persist)"
else say persist=none; fi
if [ -e /etc/issue.net ]; then say issue_net=present; else say issue_net=missing; fi
echo "written on node01" > /root/persist && say wrote=yes
rm -f /etc/issue.net && say deleted=yes
sync
say DONE
systemctl poweroff
"""
_LINE = re.compile(r"PROBE (.*)")
_PAIR = re.compile(r"(\w+)=(\S*)")


def probe_values(console: str) -> dict[str, list[str]]:
    """Every `key=value` of every `PROBE …` line, in order (a key may repeat)."""
    found: dict[str, list[str]] = {}
    for line in _LINE.findall(console):
        for key, value in _PAIR.findall(line):
            found.setdefault(key, []).append(value)
    return found


def sha256_of(path: Path) -> str:
    """What a probe's `sha256sum | cut -c1-64` prints, or `missing`."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "missing"


def install_probe(cluster: LabCluster, node: str, script: str, *,
                  targets: Sequence[str] = ("multi-user",), after: str = AFTER_BASIC) -> None:
    """Put `script` and its unit in `node`'s layer, wanted by each of `targets`, ordered
    after the units `after` names."""
    files = cluster.workdir / "probe" / node
    files.mkdir(parents=True, exist_ok=True)
    (files / "probe").write_text(script)
    (files / "unit").write_text(PROBE_UNIT.replace(f"After={AFTER_BASIC}", f"After={after}"))
    (files / "wants").write_text(WANTS_PROBE)
    cluster.oneroot("overlay", "put", node, PROBE_PATH, str(files / "probe"), "--mode", "0755")
    cluster.oneroot("overlay", "put", node, "/etc/systemd/system/oneroot-probe.service",
                    str(files / "unit"))
    for target in targets:
        cluster.oneroot("overlay", "put", node,
                        f"/etc/systemd/system/{target}.target.d/oneroot-probe.conf",
                        str(files / "wants"))


def wait_probe(cluster: LabCluster, node: str, *, timeout: float,
               exit_timeout: float = 180) -> dict[str, list[str]]:
    """Wait for the probe's `PROBE DONE` and the VM's exit; the probe's values.

    On failure the console's and the server's last lines are printed for the test log.
    """
    vm = cluster.vms[node]
    try:
        vm.wait_for(r"PROBE DONE", timeout=timeout)
        vm.wait_powered_off(timeout=exit_timeout)
    except Exception:
        print(vm.serial_text()[-8000:])
        print(cluster.serve_log.read_text(errors="replace")[-3000:])
        raise
    print(f"{node}: probe done, VM ended {vm.elapsed():.1f}s after power-on")
    return probe_values(vm.serial_text())
