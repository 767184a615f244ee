"""`oneroot console NODE` against a real IPMI 2.0 BMC (OpenIPMI's ipmi_sim on loopback) that
carries the node's serial line as SOL; the node's side is a tiny shell on a TCP port. The CLI
runs under a pseudo-terminal, as a user types: a command and its output, Ctrl-C passed to the
node, `~.` to leave, the terminal restored, and the session in the server's log."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from oneroot.testing.bmc import BmcHome, SimulatedBmc
from oneroot.testing.ports import free_port
from oneroot.testing.serial import SerialShell
from oneroot.testing.terminal import Terminal

ONEROOT = [sys.executable, "-m", "oneroot"]
PASSWORD = "pw-91c3e0"


@dataclass(frozen=True)
class Lab:
    nodes: BmcHome
    shell: SerialShell

    @property
    def home(self) -> Path:
        return self.nodes.home

    @property
    def base(self) -> Path:
        return self.nodes.base

    def oneroot(self, *args: str) -> None:
        self.nodes.oneroot(*args)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """node01 with a BMC and a serial shell; node02's BMC has another password; node03's BMC
    does not answer; node04 has none."""
    base = tmp_path_factory.mktemp("console")
    with ExitStack() as stack:
        shell = stack.enter_context(SerialShell(hostname="node01"))
        bmc = stack.enter_context(SimulatedBmc(base / "bmc01", user="admin", password=PASSWORD,
                                               powered=True, serial_port=shell.port))
        nodes = BmcHome.create(base, password=PASSWORD, nodes=4, mac_prefix="52:54:00:00:01",
                               ip_prefix="10.0.0.2")
        nodes.set("node01", f"bmc_address={bmc.address}")
        nodes.set("node02", f"bmc_address={bmc.address}",
                  f"bmc_password_file={nodes.wrong_password_file}")
        nodes.set("node03", f"bmc_address=127.0.0.1:{free_port(udp=True)}")
        yield Lab(nodes=nodes, shell=shell)


def terminal(lab: Lab, *args: str) -> Terminal:
    return Terminal([*ONEROOT, "--home", str(lab.home), *args])


def test_type_a_command_read_its_output_and_leave(lab: Lab) -> None:
    term = terminal(lab, "console", "node01")
    term.wait_raw()  # keys go to the node as typed: no line editing, no signals
    term.type(b"hostname\r")
    term.expect(b"\r\nnode01\r\n# ")
    term.type(b"echo hello over SOL\r")
    term.expect(b"hello over SOL\r\n")
    term.type(b"sleep 9\x03")  # Ctrl-C reaches the node instead of killing the console
    term.expect(b"^C\r\n")
    term.type(b"title \x1b[31mred\r")
    term.expect(b"\x07\r\n# ")
    term.type(b"~.")  # right after Enter: the escape, never sent to the node
    code, err = term.finish()
    assert code == 0, err
    assert "~. at the start of a line leaves" in err and "closed: escape" in err
    assert b"~" not in lab.shell.typed and b"\x03" in lab.shell.typed
    log = (lab.home / "console" / "node01.log").read_bytes()
    assert b"node01\r\n# " in log and b"hello over SOL" in log
    assert b"console of node01 opened" in log and b"closed (escape)" in log


def test_tail_shows_the_log_with_controls_made_visible(lab: Lab) -> None:
    shown = subprocess.run([*ONEROOT, "--home", str(lab.home), "console", "node01", "--tail"],
                           capture_output=True, check=True, timeout=60).stdout
    assert b"hello over SOL" in shown and b"\x1b" not in shown and b"\x07" not in shown
    assert b"\\x1b]0;" in shown


@pytest.mark.parametrize(("node", "error", "hint"), [
    ("node02", "refused user 'admin'", "bmc_password_file"),
    ("node03", "no answer from the BMC", "management network"),
    ("node04", "node04 has no BMC", "bmc_address"),
])
def test_bmc_failures_are_one_error_and_leave_the_terminal_alone(
        lab: Lab, node: str, error: str, hint: str) -> None:
    code, err = terminal(lab, "console", node).finish()
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 2, err
    assert lines[0].startswith("error: ") and error in lines[0], err
    assert lines[1].startswith("hint: ") and hint in lines[1], err
    assert PASSWORD not in err


def test_a_bmc_lost_mid_session_is_one_error_and_the_terminal_comes_back(
        lab: Lab) -> None:
    with SerialShell(hostname="node05") as shell, SimulatedBmc(
            lab.base / "bmc05", user="admin", password=PASSWORD, powered=True,
            serial_port=shell.port) as bmc:
        lab.oneroot("node", "add", "node05", "--mac", "52:54:00:00:01:05", "--ip",
                    "10.0.0.25", "--group", "compute", "--set", f"bmc_address={bmc.address}")
        term = terminal(lab, "console", "node05")
        term.wait_raw()
        term.type(b"hostname\r")
        term.expect(b"node05\r\n")
        bmc.__exit__(None, None, None)  # the BMC goes away while the terminal is raw
        term.type(b"echo anyone?\r")
        code, err = term.finish()
    lines = err.strip().splitlines()
    assert code != 0 and lines[-2].startswith("error: BMC 127.0.0.1:"), err
    assert "the session was lost" in lines[-2] and "Traceback" not in err
    assert lines[-1].startswith("hint: ") and "power status" in lines[-1]
    assert b"closed (error)" in (lab.home / "console" / "node05.log").read_bytes()
