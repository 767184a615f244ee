"""The lab's control file, `<workdir>/lab.json`: the supervisor's identity, the phase it is
in, and the processes it started (PIDs with their start times, so a later PID is never taken
for one of ours). `lab status` reads it; `lab down` undoes what it names.

    {"workdir", "supervisor_pid", "supervisor_start_time", "phase", "message", "error",
     "started", "lab_state_file", "netns", "nodes": [{"name", "firmware", "ephemeral",
     "serial_log", "pid", "start_time"}], "home", "servers"}

`home` (the oneroot home `lab status` reads the nodes' stages from; none: WORKDIR/home) and
`servers` (one line per boot server of `lab up --servers 2`) came later: they are written
only when set, and a file without them is read with their defaults.

The format is the one written since the lab began (no version key): `phase` is a
`LabPhase` value, written as its text.
"""

from __future__ import annotations

import enum
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from oneroot.errors import LabError
from oneroot.fsutil.atomic import write_atomic

CONTROL_FILE = "lab.json"


class LabPhase(enum.StrEnum):
    """Where a lab is. The supervisor writes the first six; `lab status` adds the last two."""

    PREPARING = "preparing"
    STARTING = "starting"
    BOOTING = "booting"
    UP = "up"
    STOPPING = "stopping"
    FAILED = "failed"
    DOWN = "down"  # no control file
    CRASHED = "crashed"  # a control file whose supervisor is gone without a failure


@dataclass(slots=True, kw_only=True)
class LabNodeRecord:
    name: str
    firmware: str
    ephemeral: bool
    serial_log: str
    pid: int | None = None
    start_time: int | None = None


@dataclass(slots=True, kw_only=True)
class LabControl:
    """The control file: what `lab status` shows and `lab down` undoes. Mutable: the
    supervisor updates it as the lab comes up and writes it after each step."""

    workdir: str
    supervisor_pid: int
    supervisor_start_time: int
    phase: LabPhase = LabPhase.PREPARING
    message: str = ""
    error: str = ""
    started: float = field(default_factory=time.time)
    lab_state_file: str | None = None
    netns: str | None = None
    nodes: list[LabNodeRecord] = field(default_factory=list)
    home: str | None = None
    servers: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        doc = asdict(self)
        for key in ("home", "servers"):  # written only when set: the old format otherwise
            if not doc[key]:
                del doc[key]
        return json.dumps(doc, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> LabControl:
        raw: dict[str, Any] = json.loads(text)
        raw["nodes"] = [LabNodeRecord(**n) for n in raw.get("nodes", [])]
        raw["phase"] = LabPhase(raw.get("phase", LabPhase.PREPARING))
        return cls(**raw)


def control_path(workdir: Path) -> Path:
    return workdir / CONTROL_FILE


def read_control(workdir: Path) -> LabControl | None:
    try:
        return LabControl.from_json(control_path(workdir).read_text())
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise LabError(f"unreadable lab control file {control_path(workdir)}: {exc}",
                       hint="`oneroot lab down` removes what it can find and the file") from exc


def write_control(ctl: LabControl) -> None:
    write_atomic(control_path(Path(ctl.workdir)), ctl.to_json().encode())


def new_control(workdir: Path) -> LabControl:
    """The control file of a supervisor that is this process."""
    me = os.getpid()
    return LabControl(workdir=str(workdir), supervisor_pid=me,
                      supervisor_start_time=process_start_time(me) or 0)


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: tells a process from a later one with the same PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else int(fields[19])


def is_alive(pid: int | None, start_time: int | None) -> bool:
    if pid is None:
        return False
    now = process_start_time(pid)
    return now is not None and (not start_time or now == start_time)


def supervisor_alive(ctl: LabControl) -> bool:
    return is_alive(ctl.supervisor_pid, ctl.supervisor_start_time)
