"""`oneroot nfs instance start|stop|status|notify`: the ganesha-ceph instance of one service
address (setting `ha_servers`), run by whichever boot server holds that address now.

An instance is `ganesha.nfsd` bound to the service address, with the address as its
`rados_cluster` nodeid: the server that takes over a dead peer's address starts the peer's
instance, whose clients reclaim their state in its grace period. keepalived (`oneroot nfs
keepalived`) calls `notify` on every VRRP change; `notify` looks at whether this host holds
the address now and starts or stops the instance to match (the order in which keepalived
runs its notify commands is not guaranteed, the address is), one at a time per instance.

    <home>/run/ganesha-instances/ADDRESS/ganesha.conf|.log|.pid   the instance
    <home>/run/ganesha-instances/ADDRESS/started.pid             the last pid started
    <home>/run/ganesha-instances/notify.log                       what each notify did
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oneroot.errors import ConfigError, ExternalToolError, OnerootError
from oneroot.fsutil import write_if_changed
from oneroot.model import NfsServerKind
from oneroot.model.haservers import HaServer, find_ha_server
from oneroot.model.paths import Paths
from oneroot.model.resolved import ResolvedCluster
from oneroot.nfs import GaneshaFiles
from oneroot.nfs.ganesha import log_problems, running_pid
from oneroot.nfs.ganesha_ceph import (
    authorize_export_users,
    evict_instance_sessions,
    join_recovery_db,
)
from oneroot.ops.exportids import keep_export_ids
from oneroot.ops.nfs_serving import ceph_export_users, nfs_plan

log = logging.getLogger(__name__)

INSTANCES = "ganesha-instances"


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceStatus:
    name: str
    service: ipaddress.IPv4Address
    held: bool  # this host holds the service address now
    pid: int | None  # the instance's ganesha, when it runs here
    listening: bool

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "service": str(self.service), "held": self.held,
                "pid": self.pid, "listening": self.listening}


@dataclass(frozen=True, slots=True, kw_only=True)
class StopResult:
    name: str
    pid: int | None  # the ganesha stopped (None: none ran)
    evicted: int  # its CephFS sessions evicted


def instance_dir(paths: Paths, service: ipaddress.IPv4Address) -> Path:
    return paths.run_dir / INSTANCES / str(service)


def instance_files(paths: Paths, service: ipaddress.IPv4Address) -> GaneshaFiles:
    return GaneshaFiles.in_dir(instance_dir(paths, service))


def holds_address(address: ipaddress.IPv4Address) -> bool:
    """Whether `address` is one of this host's (network namespace's) own."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((str(address), 0))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                return False
            raise
    return True


def _listening(address: ipaddress.IPv4Address, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((str(address), port), 0.5):
        return True
    return False


def _server(cluster: ResolvedCluster, which: str) -> HaServer:
    if NfsServerKind(cluster.settings.nfs_server) is not NfsServerKind.GANESHA_CEPH:
        raise ConfigError("ganesha instances that fail over need nfs_server=ganesha-ceph "
                          f"(it is {cluster.settings.nfs_server})",
                          hint="docs/ceph.md: storage on CephFS, then `oneroot settings set "
                               "nfs_server=ganesha-ceph ha_servers=...`")
    return find_ha_server(cluster.settings.ha_servers, which)


@contextlib.contextmanager
def _locked(paths: Paths, service: ipaddress.IPv4Address) -> Iterator[Path]:
    """One start or stop of an instance at a time (keepalived may run two notifies at once)."""
    directory = instance_dir(paths, service)
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield directory
    finally:
        os.close(fd)


def instance_status(cluster: ResolvedCluster, paths: Paths, *, port: int = 2049
                    ) -> list[InstanceStatus]:
    found = []
    for server in cluster.settings.ha_servers:
        held = holds_address(server.service)
        found.append(InstanceStatus(name=server.name, service=server.service, held=held,
                                    pid=running_pid(instance_files(paths, server.service)),
                                    listening=held and _listening(server.service, port)))
    return found


def start_instance(cluster: ResolvedCluster, paths: Paths, which: str, *, port: int = 2049,
                   binary: str = "ganesha.nfsd", timeout: float = 60) -> InstanceStatus:
    """Start the instance of service address `which` (a name or address in `ha_servers`)
    here: its exports' cephx users, its membership of the grace database, its config, then
    `ganesha.nfsd`, detached, until it listens on the address. Nothing if it runs."""
    server = _server(cluster, which)
    files = instance_files(paths, server.service)
    with _locked(paths, server.service) as directory:
        if running_pid(files) is None:
            if not holds_address(server.service):
                raise ExternalToolError(
                    f"this host does not hold {server.name}'s service address "
                    f"{server.service}", hint="keepalived starts the instance where the "
                                              "address is (`oneroot nfs instance status`)")
            plan = nfs_plan(cluster, paths, bind=server.service, port=port)
            assert plan.ctx.ceph is not None and plan.ctx.ceph.nodeid == str(server.service)
            keep_export_ids(paths, plan.export_ids)
            authorize_export_users(plan.ctx.ceph, ceph_export_users(plan.ctx))
            join_recovery_db(plan.ctx.ceph)
            write_if_changed(files.conf, plan.text.encode())
            _spawn(files, directory, server, port=port, binary=binary, timeout=timeout)
    return InstanceStatus(name=server.name, service=server.service, held=True,
                          pid=running_pid(files), listening=_listening(server.service, port))


def _spawn(files: GaneshaFiles, directory: Path, server: HaServer, *, port: int, binary: str,
           timeout: float) -> None:
    offset = files.log.stat().st_size if files.log.exists() else 0
    try:
        proc = subprocess.Popen(
            [binary, "-F", "-f", str(files.conf), "-L", str(files.log), "-p", str(files.pid)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
    except FileNotFoundError:
        raise ExternalToolError(f"{binary} not found",
                                hint="apt-get install nfs-ganesha-ceph") from None
    write_if_changed(directory / "started.pid", f"{proc.pid}\n".encode())
    deadline = time.monotonic() + timeout
    while not _listening(server.service, port):
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.returncode is None:
                proc.kill()
            raise ExternalToolError(
                f"the ganesha instance of {server.name} ({server.service}) did not listen "
                f"within {timeout:g} s (exit {proc.poll()}): "
                f"{log_problems(files.log, offset) or 'see ' + str(files.log)}",
                hint=f"check {files.conf}")
        time.sleep(0.1)
    log.info("nfs.instance.started name=%s service=%s pid=%d", server.name, server.service,
             proc.pid)


def stop_instance(cluster: ResolvedCluster, paths: Paths, which: str, *, evict: bool = True,
                  timeout: float = 15) -> StopResult:
    """Stop the instance of `which` here (SIGTERM, then SIGKILL), then evict the CephFS
    sessions its process held (`evict`), which the MDS would otherwise keep, with their
    capabilities, waiting for a reclaim. Nothing if it does not run."""
    server = _server(cluster, which)
    files = instance_files(paths, server.service)
    with _locked(paths, server.service) as directory:
        pid = running_pid(files)
        if pid is None:
            return StopResult(name=server.name, pid=None, evicted=0)
        _terminate(pid, timeout=timeout)
        evicted = 0
        if evict:
            plan = nfs_plan(cluster, paths, bind=server.service)
            assert plan.ctx.ceph is not None
            evicted = evict_instance_sessions(plan.ctx.ceph, pid=pid)
        (directory / "started.pid").unlink(missing_ok=True)
    log.info("nfs.instance.stopped name=%s service=%s pid=%d evicted=%d", server.name,
             server.service, pid, evicted)
    return StopResult(name=server.name, pid=pid, evicted=evicted)


def _terminate(pid: int, *, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def notify(cluster: ResolvedCluster, paths: Paths, instance: str, state: str) -> str:
    """keepalived's notify (`INSTANCE oneroot_NAME STATE PRIORITY`): start NAME's instance
    if this host holds its address now, stop it if not. Recorded in notify.log, errors too
    (keepalived drops a notify's output); returns the line recorded."""
    name = instance.removeprefix("oneroot_")
    try:
        server = _server(cluster, name)
        if holds_address(server.service):
            started = start_instance(cluster, paths, name)
            done = f"started pid={started.pid}"
        else:
            stopped = stop_instance(cluster, paths, name)
            done = (f"stopped pid={stopped.pid} evicted={stopped.evicted}"
                    if stopped.pid else "not running")
    except OnerootError as exc:
        done = f"error: {exc.message}"
    line = f"{time.time():.3f} {name} {state} {done}"
    record = paths.run_dir / INSTANCES / "notify.log"
    record.parent.mkdir(parents=True, exist_ok=True)
    with record.open("a") as out:
        out.write(line + "\n")
    return line
