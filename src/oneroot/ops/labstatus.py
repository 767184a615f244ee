"""What `oneroot lab status` and `lab up` read of a lab: `LabStatus`, one `LabNodeStatus` per
node (its VM, boot stage, runlevel and hello), from the control file and the lab's events, or,
for `lab up --server vm`, from the status the supervisor mirrors out of the server VM
(`<workdir>/server-vm-status.json`, a `VmStatusMirror`).
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oneroot.errors import LabError
from oneroot.fsutil.atomic import write_atomic
from oneroot.inventory import database
from oneroot.inventory.database import database_url
from oneroot.lab.bmc import running_vm_pid
from oneroot.lab.netns import list_netns
from oneroot.model.paths import Paths
from oneroot.model.resolved import resolve_cluster
from oneroot.ops.inventory import inventory_exists, open_store
from oneroot.ops.labcontrol import LabControl, LabPhase, is_alive, read_control, supervisor_alive
from oneroot.ops.status import NodeBootStatus, read_status

HELLO_DIR = "/var/tmp"
VM_STATUS_FILE = "server-vm-status.json"  # `lab up --server vm`: mirrored from the VM
RW_TOP, TMPFS_TOP = "rw NFS layer", "tmpfs"


@dataclass(frozen=True, slots=True, kw_only=True)
class LabNodeStatus:
    node: str
    firmware: str
    top: str  # RW_TOP or TMPFS_TOP
    vm: str  # running, off, or "-" (never started)
    pid: int | None
    stage: str  # the last boot event's stage, or "never booted"
    time: float | None
    runlevel: str | None  # the systemd target the node reported, once it did
    message: str
    serial_log: str
    hello: str | None  # what the node wrote in its hello file, read on the server
    hello_file: str

    def as_json(self) -> dict[str, Any]:
        return {"node": self.node, "firmware": self.firmware, "top": self.top, "vm": self.vm,
                "pid": self.pid, "stage": self.stage, "time": self.time,
                "runlevel": self.runlevel, "message": self.message,
                "serial_log": self.serial_log, "hello": self.hello,
                "hello_file": self.hello_file}


@dataclass(frozen=True, slots=True, kw_only=True)
class LabStatus:
    workdir: str
    running: bool = False
    phase: LabPhase = LabPhase.DOWN
    message: str = ""
    error: str = ""
    netns: str | None = None
    nodes: tuple[LabNodeStatus, ...] = ()
    supervisor_pid: int | None = None  # these two: only when there is a control file
    uptime_seconds: float | None = None
    servers: tuple[str, ...] = ()  # `lab up --servers 2`: one line per boot server

    @property
    def finished(self) -> bool:
        """Every node reported its runlevel, and every node with a rw top has its hello on
        the server: what `lab up` waits for."""
        if self.phase != LabPhase.UP or not self.nodes:
            return False
        if self.servers:  # the two-server lab is up once each node writes its lines
            return True
        rw = [n for n in self.nodes if n.top != TMPFS_TOP]
        return all(n.runlevel for n in self.nodes) and all(n.hello for n in rw)

    def as_json(self) -> dict[str, Any]:
        """The document `lab status --json` prints (its keys in this order)."""
        doc: dict[str, Any] = {"workdir": self.workdir, "running": self.running,
                               "phase": str(self.phase), "message": self.message,
                               "error": self.error, "netns": self.netns,
                               "nodes": [n.as_json() for n in self.nodes]}
        if self.supervisor_pid is not None:
            doc["supervisor_pid"] = self.supervisor_pid
            doc["uptime_seconds"] = self.uptime_seconds
        if self.servers:
            doc["servers"] = list(self.servers)
        return doc


@dataclass(frozen=True, slots=True, kw_only=True)
class VmStatusMirror:
    """`oneroot status --json`'s nodes and the rw nodes' hello files, read in the server VM.

        {"nodes": [<oneroot status --json node>...], "hello": {"node01": "hello from ..."}}
    """

    nodes: tuple[NodeBootStatus, ...] = ()
    hello: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"nodes": [n.as_json() for n in self.nodes],
                           "hello": self.hello}) + "\n"

    @classmethod
    def from_json(cls, text: str) -> VmStatusMirror:
        raw = json.loads(text)
        return cls(nodes=tuple(NodeBootStatus.from_json(n) for n in raw.get("nodes", [])),
                   hello=dict(raw.get("hello", {})))


def vm_status_path(workdir: Path) -> Path:
    return workdir / VM_STATUS_FILE


def write_vm_status(workdir: Path, mirror: VmStatusMirror) -> None:
    write_atomic(vm_status_path(workdir), mirror.to_json().encode())


def read_vm_status(workdir: Path) -> VmStatusMirror | None:
    try:
        return VmStatusMirror.from_json(vm_status_path(workdir).read_text())
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError) as exc:
        raise LabError(f"unreadable {vm_status_path(workdir)}: {exc}",
                       hint="the lab supervisor rewrites it every 5 s; "
                            "`oneroot lab down` removes it") from exc


def hello_file(workdir: Path, node: str) -> Path:
    """Where node's hello lands on the server (its layer's upper/), if its top is rw."""
    return workdir / "state" / "systems" / node / "upper" / HELLO_DIR.lstrip("/") / \
        f"hello-from-{node}"


def lab_status(workdir: Path) -> LabStatus:
    """The control file, whether its processes live, and each node's boot stage."""
    ctl = read_control(workdir)
    if ctl is None:
        return LabStatus(workdir=str(workdir))
    alive = supervisor_alive(ctl)
    mirror = read_vm_status(workdir)
    home = Path(ctl.home) if ctl.home else workdir / "home"
    if mirror is not None:
        stages = {n.node: n for n in mirror.nodes}
    elif alive or database_url(Paths(home=home)) is None:
        stages = _local_stages(home)
    else:  # its database went with the lab's supervisor
        stages = {}
    return LabStatus(
        workdir=str(workdir), running=alive,
        phase=ctl.phase if alive or ctl.phase == LabPhase.FAILED else LabPhase.CRASHED,
        message=ctl.message, error=ctl.error,
        netns=ctl.netns if ctl.netns in list_netns() else None,
        nodes=tuple(_node_status(ctl, i, stages.get(record.name), mirror)
                    for i, record in enumerate(ctl.nodes)),
        supervisor_pid=ctl.supervisor_pid, uptime_seconds=round(time.time() - ctl.started, 1),
        servers=tuple(ctl.servers))


def _local_stages(home: Path) -> dict[str, NodeBootStatus]:
    """Each node's boot status from the lab's own home (the namespace server; with two
    servers, A's home on their PostgreSQL)."""
    paths = Paths(home=home)
    if not (inventory_exists(paths) and database.exists(paths, paths.events_db)):
        return {}
    with contextlib.closing(open_store(paths)) as store:
        cluster = resolve_cluster(store.load())
    return {n.node: n for n in read_status(paths, cluster).nodes}


def _node_status(ctl: LabControl, index: int, st: NodeBootStatus | None,
                 mirror: VmStatusMirror | None) -> LabNodeStatus:
    record = ctl.nodes[index]
    message = str(st.detail.get("message", "")) if st is not None else ""
    hello = hello_file(Path(ctl.workdir), record.name)
    if mirror is not None:
        hello_text = mirror.hello.get(record.name)
    else:
        hello_text = hello.read_text().strip() if hello.exists() else None
    # A node with a BMC gets a new QEMU at each power on: its PID file says which.
    pid = running_vm_pid(Path(record.serial_log).with_suffix("").with_suffix(".pid"),
                         record.name)
    return LabNodeStatus(
        node=record.name, firmware=record.firmware,
        top=TMPFS_TOP if record.ephemeral else RW_TOP,
        vm=("running" if is_alive(record.pid, record.start_time) or pid
             else "off" if record.pid else "-"),
        pid=pid or record.pid,
        stage=st.stage if st is not None else "never booted",
        time=st.time if st is not None else None,
        runlevel=message if message.endswith(".target") else None,
        message=message, serial_log=record.serial_log, hello=hello_text,
        hello_file=str(hello))


def serial_log(workdir: Path, node: str) -> Path:
    ctl = read_control(workdir)
    if ctl is not None:
        for record in ctl.nodes:
            if record.name == node:
                return Path(record.serial_log)
    path = workdir / "vms" / f"{node}.serial.log"
    if not path.exists():
        known = ", ".join(r.name for r in ctl.nodes) if ctl else "none (the lab is down)"
        raise LabError(f"no console log for {node!r} in {workdir}",
                       hint=f"lab nodes: {known}")
    return path
