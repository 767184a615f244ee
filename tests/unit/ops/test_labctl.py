"""The lab's typed state: when `lab up` may say it is finished, the JSON `lab status --json`
prints, and the control and mirror files, read back as they were written before they were
typed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from oneroot.ops import labctl
from oneroot.ops.labcontrol import (
    LabControl,
    LabPhase,
    new_control,
    read_control,
    write_control,
)
from oneroot.ops.labstatus import (
    RW_TOP,
    TMPFS_TOP,
    LabNodeStatus,
    LabStatus,
    lab_status,
    read_vm_status,
    vm_status_path,
)


def node(name: str, *, top: str = TMPFS_TOP, runlevel: str | None = "multi-user.target",
         hello: str | None = None) -> LabNodeStatus:
    return LabNodeStatus(node=name, firmware="bios", top=top, vm="running", pid=None,
                         stage="init", time=None, runlevel=runlevel, message="",
                         serial_log="", hello=hello, hello_file="")


@pytest.mark.parametrize(("phase", "nodes", "finished"), [
    (LabPhase.UP, [node("node01", top=RW_TOP, hello="hello from node01"), node("node02")],
     True),
    (LabPhase.UP, [node("node01", top=RW_TOP), node("node02")], False),  # no hello yet
    (LabPhase.UP, [node("node01", top=RW_TOP, hello="hi"), node("node02", runlevel=None)],
     False),
    (LabPhase.UP, [node("node02")], True),  # only tmpfs tops: no hello expected
    (LabPhase.UP, [], False),
    (LabPhase.BOOTING, [node("node02")], False),
    (LabPhase.FAILED, [node("node02")], False),
])
def test_lab_finished(phase: LabPhase, nodes: list[LabNodeStatus], finished: bool) -> None:
    assert LabStatus(workdir="/w", phase=phase, nodes=tuple(nodes)).finished is finished


# The control file as the untyped code wrote it (json.dumps(asdict(ctl), indent=2)).
OLD_CONTROL = """{
  "workdir": "WORKDIR",
  "supervisor_pid": 4242,
  "supervisor_start_time": 1,
  "phase": "booting",
  "message": "node01 powered on (bios)",
  "error": "",
  "started": 1765000000.5,
  "lab_state_file": "/run/oneroot-lab/x.json",
  "netns": "onerootlab-x",
  "nodes": [
    {
      "name": "node01",
      "firmware": "bios",
      "ephemeral": false,
      "serial_log": "WORKDIR/vms/node01.serial.log",
      "pid": 4243,
      "start_time": 2
    }
  ]
}
"""


def test_the_control_file_format_is_unchanged(tmp_path: Path) -> None:
    text = OLD_CONTROL.replace("WORKDIR", str(tmp_path))
    (tmp_path / "lab.json").write_text(text)
    ctl = read_control(tmp_path)
    assert ctl is not None and ctl.phase is LabPhase.BOOTING and ctl.nodes[0].pid == 4243
    write_control(ctl)
    assert (tmp_path / "lab.json").read_text() == text  # byte for byte


def test_an_unknown_phase_is_an_error_with_a_hint(tmp_path: Path) -> None:
    (tmp_path / "lab.json").write_text(OLD_CONTROL.replace('"booting"', '"dancing"'))
    with pytest.raises(labctl.LabError, match="unreadable lab control file") as caught:
        read_control(tmp_path)
    assert "lab down" in (caught.value.hint or "")


def test_lab_status_json_keeps_its_keys_and_order(tmp_path: Path) -> None:
    assert list(lab_status(tmp_path).as_json()) == [
        "workdir", "running", "phase", "message", "error", "netns", "nodes"]
    ctl = new_control(tmp_path)
    ctl.phase = LabPhase.UP
    write_control(ctl)
    doc = json.loads(json.dumps(lab_status(tmp_path).as_json()))
    assert list(doc) == ["workdir", "running", "phase", "message", "error", "netns", "nodes",
                         "supervisor_pid", "uptime_seconds"]
    assert doc["phase"] == "up" and doc["running"] is True
    assert doc["supervisor_pid"] == os.getpid()


def test_the_server_vm_mirror_is_read_typed(tmp_path: Path) -> None:
    # As the supervisor of `lab up --server vm` wrote it before it was typed.
    vm_status_path(tmp_path).write_text(json.dumps({
        "nodes": [{"node": "node01", "ip": "10.0.0.11", "stage": "init", "time": 5.0,
                   "age_seconds": 1.0, "detail": {"message": "multi-user.target"}}],
        "hello": {"node01": "hello from node01"}}) + "\n")
    mirror = read_vm_status(tmp_path)
    assert mirror is not None and mirror.nodes[0].detail["message"] == "multi-user.target"
    # Start time 1 never matches: a supervisor that is gone (`lab down` must not signal us).
    ctl = LabControl(workdir=str(tmp_path), supervisor_pid=os.getpid(),
                     supervisor_start_time=1, phase=LabPhase.UP,
                     nodes=[labctl.LabNodeRecord(name="node01", firmware="bios",
                                                 ephemeral=False, serial_log="x")])
    write_control(ctl)
    status = lab_status(tmp_path)
    assert status.nodes[0].runlevel == "multi-user.target"
    assert status.nodes[0].hello == "hello from node01"
    assert status.phase is LabPhase.CRASHED and not status.finished
    # `lab down` removes the mirror with the control file: a later lab never shows it.
    labctl.stop_lab(tmp_path, state_dir=tmp_path / "none")
    assert not vm_status_path(tmp_path).exists()
