"""`oneroot doctor`, `oneroot completion` and the `oneroot lab` commands that need no VM
(status, console, down on a lab that is not there, or whose supervisor is gone)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from oneroot.cli.main import main
from oneroot.ops import labcontrol, labctl


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_doctor_json_without_inventory(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    code, out, err = run(capsys, "--home", str(tmp_path / "none"), "doctor", "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["ok"] is False
    checks = {f["check"] for f in doc["findings"]}
    assert {"kernel", "nfs", "boot-binaries", "inventory"} <= checks
    assert all(set(f) == {"check", "level", "message", "fix"} for f in doc["findings"])
    assert "doctor: 1 check(s) failed" in err


def test_doctor_text_shows_fix_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                     ) -> None:
    code, out, _ = run(capsys, "--home", str(tmp_path / "none"), "doctor")
    assert code == 1
    assert "fix: create one: `oneroot init" in out
    assert "error(s)" in out


@pytest.mark.parametrize(("shell", "marker"), [("bash", "complete -o nosort -F"),
                                               ("zsh", "#compdef oneroot"),
                                               ("fish", "complete --no-files --command")])
def test_completion_scripts(shell: str, marker: str, capsys: pytest.CaptureFixture[str]
                            ) -> None:
    code, out, _ = run(capsys, "completion", shell)
    assert code == 0
    assert marker in out and "_ONEROOT_COMPLETE" in out


def test_lab_status_when_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "lab", "status", "--workdir", str(tmp_path))
    assert code == 0 and "no lab runs" in out
    code, out, _ = run(capsys, "lab", "status", "--json", "--workdir", str(tmp_path))
    assert json.loads(out)["phase"] == "down"


def test_lab_down_is_a_no_op_when_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    code, out, _ = run(capsys, "lab", "down", "--workdir", str(tmp_path))
    assert code == 0 and "nothing to do" in out


def test_lab_console_prints_the_serial_log(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "lab", "console", "node01", "--no-follow", "--workdir",
                       str(tmp_path))
    assert code != 0 and "no console log" in err
    (tmp_path / "vms").mkdir()
    (tmp_path / "vms" / "node01.serial.log").write_text("".join(f"line {i}\n"
                                                                for i in range(100)))
    code, out, _ = run(capsys, "lab", "console", "node01", "--no-follow", "-n", "3",
                       "--workdir", str(tmp_path))
    assert code == 0 and out.splitlines() == ["line 97", "line 98", "line 99"]


def test_crashed_lab_shows_as_crashed_and_down_cleans_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A control file whose supervisor is gone (PID 1's start time never matches 1).
    ctl = labcontrol.LabControl(
        workdir=str(tmp_path), supervisor_pid=os.getpid(), supervisor_start_time=1,
        phase=labcontrol.LabPhase.UP,
        nodes=[labcontrol.LabNodeRecord(name="node01", firmware="bios", ephemeral=False,
                                        serial_log=str(tmp_path / "x.log"),
                                        pid=os.getpid(), start_time=1)])
    labcontrol.write_control(ctl)
    code, out, _ = run(capsys, "lab", "status", "--json", "--workdir", str(tmp_path))
    doc = json.loads(out)
    assert doc["phase"] == "crashed" and doc["running"] is False
    assert doc["nodes"][0]["vm"] == "off" and doc["nodes"][0]["top"] == "rw NFS layer"
    code, out, _ = run(capsys, "lab", "down", "--workdir", str(tmp_path))
    assert code == 0
    assert not labcontrol.control_path(tmp_path).exists()


def test_lab_up_refuses_a_second_lab(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                     ) -> None:
    me = os.getpid()
    labcontrol.write_control(labcontrol.LabControl(
        workdir=str(tmp_path), supervisor_pid=me,
        supervisor_start_time=labcontrol.process_start_time(me) or 0, phase=labcontrol.LabPhase.UP))
    code, _, err = run(capsys, "lab", "up", "--workdir", str(tmp_path))
    assert code == 1 and "already runs" in err and "lab down" in err


def test_lab_up_refuses_uefi_nodes_on_a_server_vm_before_starting(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    workdir = tmp_path / "lab"
    code, _, err = run(capsys, "lab", "up", "--server", "vm", "--firmware", "uefi",
                       "--workdir", str(workdir))
    assert code == 1 and "SeaBIOS only" in err and "hint:" in err
    assert not workdir.exists()  # no supervisor, no control file, no log


def test_the_supervisor_is_an_edge_process() -> None:
    # `python -m oneroot.cli.labsupervisor` is what `lab up` starts; ops has no process loop.
    done = subprocess.run([sys.executable, "-m", "oneroot.cli.labsupervisor", "--help"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "--server {namespace,vm}" in done.stdout
    assert not hasattr(labctl, "main") and not hasattr(labctl, "run_supervisor")
