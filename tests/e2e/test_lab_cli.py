"""`oneroot lab up / status / console / run / down` end to end (issue 6, part 5; issue 13):
two QEMU nodes netboot from a lab that outlives the command, reach their runlevel, node01's
file appears in its layer on the server; through their BMCs (ipmi_sim on the management
network) node01 is powered off and on again and reaches its runlevel, one logs in on its
serial-over-LAN console, and a wrong BMC password is one error that changes nothing; `lab
down` leaves nothing behind, also after the supervisor was killed (SIGKILL: no teardown of
its own). One `lab up` serves every test of the module."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from oneroot.lab import list_netns
from oneroot.ops import labctl
from oneroot.ops.labcontrol import process_start_time
from oneroot.testing.cache import suite_cache_dir
from oneroot.testing.terminal import Terminal

pytestmark = pytest.mark.e2e

CLI = ("import sys\n"
       "from oneroot.cli.main import main\n"
       "sys.exit(main(sys.argv[1:]))\n")


def oneroot(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@dataclass
class UpLab:
    workdir: Path
    up: subprocess.CompletedProcess[str]

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(
            oneroot("lab", "status", "--json", "--workdir", str(self.workdir)).stdout)
        return doc

    def on_server(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`oneroot lab run ARGS`: oneroot on the lab's server, where the BMCs are."""
        return oneroot("lab", "run", "--workdir", str(self.workdir), *args, timeout=timeout)

    def stages(self) -> dict[str, str]:
        report = json.loads(oneroot("--home", str(self.workdir / "home"), "status",
                                    "--json").stdout)
        return {n["node"]: n["stage"] for n in report["nodes"]}

    def wait_stage(self, node: str, stage: str, *, timeout: float) -> float:
        started = time.monotonic()
        while (now := self.stages()[node]) != stage:
            assert time.monotonic() - started < timeout, f"{node} is at {now}, not {stage}"
            time.sleep(1)
        return time.monotonic() - started


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpLab]:
    """One `lab up` of two nodes for the whole module (the boot is the slow part)."""
    if os.geteuid() != 0:
        pytest.skip("the lab creates network namespaces: run as root")
    workdir = tmp_path_factory.mktemp("lab") / "lab"
    try:
        started = time.monotonic()
        up = oneroot("lab", "up", "--nodes", "2", "--workdir", str(workdir), "--timeout",
                     "900", "--cache-dir", str(suite_cache_dir()), timeout=1000)
        print(up.stdout[-3000:], up.stderr[-3000:])
        print(f"lab up: {time.monotonic() - started:.1f} s")
        yield UpLab(workdir=workdir, up=up)
    finally:
        labctl.stop_lab(workdir)


def test_lab_up_status_console(lab: UpLab) -> None:
    up, workdir = lab.up, lab.workdir
    assert up.returncode == 0
    assert "node01: " in up.stdout and "node02: " in up.stdout
    hello = workdir / "state/systems/node01/upper/var/tmp/hello-from-node01"
    assert hello.read_text().startswith("hello from node01: ")
    assert "fuse" in hello.read_text()  # node01's top is its rw NFS layer
    assert hello.read_text().strip() in up.stdout

    # The lab outlived `lab up`: another invocation sees it.
    status = lab.status()
    assert status["running"] and status["phase"] == "up"
    assert status["netns"] in list_netns()
    nodes = {n["node"]: n for n in status["nodes"]}
    assert {n["stage"] for n in nodes.values()} == {"runlevel"}
    assert all(n["runlevel"] and n["runlevel"].endswith(".target") for n in nodes.values())
    assert nodes["node01"]["top"] == "rw NFS layer" and nodes["node02"]["top"] == "tmpfs"
    console = oneroot("lab", "console", "node01", "--no-follow", "-n", "200", "--workdir",
                      str(workdir))
    # systemd shortens "Starting oneroot-lab-hello.service - oneroot lab: hello from this
    # node..." to the console's width (…eroot lab: hello…): match the end of the description.
    assert console.returncode == 0 and "lab: hello from this node" in console.stdout
    # Each node was powered on by its BMC: `power-on` was its first stage.
    power = json.loads(lab.on_server("power", "status", "node[01-02]", "--json").stdout)
    assert [(r["node"], r["state"], r["bmc"]) for r in power] == [
        ("node01", "on", "10.0.1.11:623"), ("node02", "on", "10.0.1.12:623")]


def test_power_off_then_on_reaches_the_runlevel(lab: UpLab) -> None:
    node01 = next(n for n in lab.status()["nodes"] if n["node"] == "node01")
    off = lab.on_server("power", "off", "node01")
    assert off.returncode == 0, off.stderr
    assert lab.stages()["node01"] == "off"
    assert process_start_time(node01["pid"]) is None, "node01's QEMU still runs"
    shown = json.loads(lab.on_server("power", "status", "node01", "--json").stdout)
    assert shown[0]["state"] == "off"
    on = lab.on_server("power", "on", "node01")
    assert on.returncode == 0, on.stderr
    assert lab.stages()["node01"] == "power-on"
    took = lab.wait_stage("node01", "runlevel", timeout=600)
    print(f"node01: power on to runlevel in {took:.1f} s")


def test_log_in_on_the_console_and_run_a_command(lab: UpLab) -> None:
    password = (lab.workdir / "bmc" / "console-password").read_text().strip()
    term = Terminal([sys.executable, "-c", CLI, "lab", "console", "node01", "--workdir",
                     str(lab.workdir)])
    term.wait_raw(timeout=60)  # the SOL session is up
    for _ in range(3):  # the getty may be busy printing: ask for its prompt again
        term.type(b"\r")
        try:
            term.expect(b"login: ", timeout=20)
            break
        except AssertionError:
            continue
    term.type(b"root\r")
    term.expect(b"Password: ", timeout=30)
    term.type(password.encode() + b"\r")
    term.expect(b"# ", timeout=60)
    term.type(b"echo sum=$((6*7)) on $(hostname)\r")
    term.expect(b"sum=42 on node01", timeout=30)
    term.type(b"exit\r")
    term.expect(b"login: ", timeout=30)
    term.type(b"\r~.")
    code, err = term.finish()
    assert code == 0, err
    assert "closed: escape" in err


def test_a_wrong_bmc_password_is_one_error_and_changes_nothing(lab: UpLab) -> None:
    wrong = lab.workdir / "bmc" / "wrong-password"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    before = lab.stages()["node02"]
    node02 = next(n for n in lab.status()["nodes"] if n["node"] == "node02")
    assert lab.on_server("node", "set", "node02", "--set",
                         f"bmc_password_file={wrong}").returncode == 0
    try:
        for args in (("power", "off", "node02"), ("console", "node02")):
            failed = lab.on_server(*args)
            lines = failed.stderr.strip().splitlines()
            assert failed.returncode != 0 and len(lines) == 2, failed.stderr
            assert lines[0].startswith("error: ") and "refused user 'admin'" in lines[0]
            assert lines[1].startswith("hint: ") and "Traceback" not in failed.stderr
            assert "not-the-password" not in failed.stdout + failed.stderr
    finally:
        lab.on_server("node", "set", "node02", "--unset", "bmc_password_file")
    after = next(n for n in lab.status()["nodes"] if n["node"] == "node02")
    assert after["vm"] == "running" and after["pid"] == node02["pid"]  # still the same VM
    assert lab.stages()["node02"] == before


def test_lab_down_after_the_supervisor_was_killed(lab: UpLab) -> None:
    """A supervisor killed without its teardown: `lab down` finds the rest by recorded ids."""
    workdir = lab.workdir
    status = lab.status()
    netns = status["netns"]
    pids = [n["pid"] for n in status["nodes"]]
    os.kill(status["supervisor_pid"], signal.SIGKILL)
    time.sleep(0.5)
    assert lab.status()["phase"] == "crashed"
    down = oneroot("lab", "down", "--workdir", str(workdir))
    assert down.returncode == 0, down.stderr
    assert netns not in list_netns()
    for pid in pids:
        assert process_start_time(pid) is None, f"QEMU {pid} survived"
    assert not labctl.mounts_under(workdir)
    assert lab.status()["phase"] == "down"
