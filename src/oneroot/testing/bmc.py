"""Simulated BMCs for tests: OpenIPMI's `ipmi_sim` (a real IPMI 2.0 LAN BMC) on loopback, and
`BmcHome`, the oneroot home the power and console tests share (nodes in a group that holds the
BMC user and password file; `oneroot` runs that check the password never shows).

Its chassis control is a small script that keeps the power state, the next boot device and a
log of every request in files, so a test reads what the BMC was asked to do:

    with SimulatedBmc(tmp_path / "bmc01", user="admin", password="s3cret") as bmc:
        ... bmc.address, bmc.power (True/False), bmc.boot, bmc.requests()
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from oneroot.lab.netns import terminate_process
from oneroot.render.ipmisim import SIM_EMU, IpmiSimConfig, render_lan_conf
from oneroot.testing.ports import free_port

_CHASSIS = """#!/bin/sh
# ipmi_sim's chassis control: MC get PARM... | MC set PARM VALUE...
dir=$(dirname "$0")
mc=$1; op=$2; shift 2
echo "$op $*" >> "$dir/requests"
case $op in
get)
  for p in "$@"; do
    case $p in
    power) echo "power:$(cat "$dir/power")" ;;
    boot) echo "boot:$(cat "$dir/boot")" ;;
    esac
  done ;;
set)
  while [ $# -ge 2 ]; do
    case $1 in
    power) echo "$2" > "$dir/power" ;;
    boot) echo "$2" > "$dir/boot" ;;
    esac
    shift 2
  done ;;
*) exit 1 ;;
esac
"""

class SimulatedBmc:
    def __init__(self, workdir: Path, *, user: str, password: str, powered: bool = False,
                 serial_port: int | None = None, boot_option: bool = True) -> None:
        """`serial_port`: a TCP port on loopback where the node's serial line listens; the
        BMC connects to it and carries it as SOL. Without `boot_option` it refuses to set
        the next boot device (as the lab's BMCs, which run their VM, do)."""
        self.boot_option = boot_option
        self.dir = workdir
        self.serial_port = serial_port
        self.user = user
        self.password = password
        self.port = free_port(udp=True)
        self._powered = powered
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def power(self) -> bool:
        return (self.dir / "power").read_text().strip() == "1"

    @property
    def boot(self) -> str:
        return (self.dir / "boot").read_text().strip()

    def requests(self) -> list[str]:
        path = self.dir / "requests"
        return path.read_text().splitlines() if path.exists() else []

    def __enter__(self) -> SimulatedBmc:
        sim = shutil.which("ipmi_sim")
        if sim is None:
            raise RuntimeError("ipmi_sim is missing: install Debian's openipmi "
                               "(scripts/install-packages)")
        (self.dir / "state").mkdir(parents=True, exist_ok=True)
        chassis = self.dir / "chassis"
        chassis.write_text(_CHASSIS if self.boot_option else _CHASSIS.replace(
            'boot) echo "$2" > "$dir/boot" ;;', "boot) exit 1 ;;"))
        chassis.chmod(0o755)
        (self.dir / "power").write_text("1\n" if self._powered else "0\n")
        (self.dir / "boot").write_text("default\n")
        sol = None if self.serial_port is None else f"tcp:127.0.0.1:{self.serial_port}"
        (self.dir / "lan.conf").write_text(render_lan_conf(IpmiSimConfig(
            name=self.dir.name, lan=ipaddress.IPv4Address("127.0.0.1"), port=self.port,
            user=self.user, password=self.password, chassis_control=f"{chassis} 0x20",
            sol=sol)))
        (self.dir / "sim.emu").write_text(SIM_EMU)
        log = (self.dir / "ipmi_sim.log").open("wb")
        self._proc = subprocess.Popen(
            [sim, "-n", "-c", str(self.dir / "lan.conf"), "-f", str(self.dir / "sim.emu"),
             "-s", str(self.dir / "state")], stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT)
        self._wait_listening()
        return self

    def _wait_listening(self) -> None:
        """ipmi_sim binds its UDP port after reading its files: wait until the port is taken
        (a bound for a loaded machine)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"ipmi_sim exited: {(self.dir / 'ipmi_sim.log').read_text()}")
            if udp_bound(self.port):
                return
            time.sleep(0.05)
        raise RuntimeError(f"ipmi_sim did not listen on {self.address}")

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._proc is not None:
            terminate_process(self._proc.pid, None, timeout=5, popen=self._proc)
            self._proc = None


def udp_bound(port: int, table: Path = Path("/proc/net/udp")) -> bool:
    """Whether a UDP socket of this network namespace is bound to `port` on 127.0.0.1 (or on
    every address). Read, not probed by binding it: a probe holding the port at the moment
    ipmi_sim binds it makes ipmi_sim fail."""
    wanted = {f"0100007F:{port:04X}", f"00000000:{port:04X}"}
    return any(line.split()[1] in wanted for line in table.read_text().splitlines()[1:])


ONEROOT = (sys.executable, "-m", "oneroot")


@dataclass(frozen=True, slots=True, kw_only=True)
class BmcHome:
    """A oneroot home in `base` whose group `compute` sets bmc_user and bmc_password_file;
    `base/bmc.pw` holds `password`, `base/wrong.pw` another one (both mode 0600)."""

    base: Path
    password: str
    user: str = "admin"

    @property
    def home(self) -> Path:
        return self.base / "home"

    @property
    def password_file(self) -> Path:
        return self.base / "bmc.pw"

    @property
    def wrong_password_file(self) -> Path:
        return self.base / "wrong.pw"

    @classmethod
    def create(cls, base: Path, *, password: str, nodes: int, mac_prefix: str,
               ip_prefix: str) -> BmcHome:
        """node01…nodeNN in group compute, MAC `mac_prefix:NN`, IP `ip_prefix` + N."""
        bh = cls(base=base, password=password)
        for path, text in ((bh.password_file, password), (bh.wrong_password_file, "not-it")):
            path.write_text(text + "\n")
            path.chmod(0o600)
        bh.oneroot("init", "--server", "10.0.0.1", "--subnet", "10.0.0.0/24",
                   "--interface", "lo")
        bh.oneroot("group", "add", "compute", "--set", f"bmc_user={bh.user}",
                   "--set", f"bmc_password_file={bh.password_file}")
        for i in range(1, nodes + 1):
            bh.oneroot("node", "add", f"node{i:02d}", "--mac", f"{mac_prefix}:{i:02x}",
                       "--ip", f"{ip_prefix}{i}", "--group", "compute")
        return bh

    def set(self, node: str, *settings: str) -> None:
        """`oneroot node set NODE --set KEY=VALUE…`."""
        self.oneroot("node", "set", node, *(a for s in settings for a in ("--set", s)))

    def oneroot(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*ONEROOT, "--home", str(self.home), *args], text=True,
                                capture_output=True, check=False, timeout=120)
        assert self.password not in result.stdout + result.stderr
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result


def one_error(result: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    """The `error:` and `hint:` lines of a command that failed with exactly those two."""
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: ")
    return lines[0], lines[1]


def power_rows(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, object]]:
    """`oneroot power … --json`'s rows by node."""
    return {str(r["node"]): r for r in json.loads(result.stdout)}
