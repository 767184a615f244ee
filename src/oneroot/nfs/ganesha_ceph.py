"""nfs-ganesha on CephFS: the `rados_cluster` recovery database its instances share.

Each ganesha instance (one per service address) is a member of the grace database under its
nodeid; an instance that is not a member refuses to start. `ganesha-rados-grace add` is
idempotent and creates the pool if it is missing (a site's Ceph admin should create it with
the cluster's replication: `ceph osd pool create nfs-ganesha`).
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from oneroot.errors import ExternalToolError
from oneroot.fsutil import write_if_changed
from oneroot.render.context import CephExports

log = logging.getLogger(__name__)

GRACE_TOOL = "ganesha-rados-grace"
_PROBE = "oneroot-keyring-probe"


def grace_command(ceph: CephExports, *args: str, tool: str = GRACE_TOOL) -> list[str]:
    return [tool, "--cephconf", str(ceph.conf), "--userid", ceph.user, "--pool", ceph.pool,
            "--ns", ceph.namespace, *args]


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportUser:
    """A cephx user for one export: MDS caps on its CephFS path only (`r` or `rw`)."""

    name: str
    path: PurePosixPath
    writable: bool


def authorize_export_users(ceph: CephExports, users: Iterable[ExportUser], *,
                           tool: str = "ceph", timeout: float = 60) -> int:
    """Create each export's cephx user that has no keyring yet, and write its keyring where
    libcephfs looks (ceph.conf's `keyring`), 0600. Runs as the `ceph.user` admin. Returns
    how many it created (an existing keyring is taken as done: one `ceph` call per new
    export, not per export and apply)."""
    done = 0
    template = _keyring_path(ceph, f"client.{_PROBE}", timeout=timeout)
    for user in users:
        entity = f"client.{user.name}"
        path = Path(str(template).replace(_PROBE, user.name))
        if path.exists():
            continue
        keyring = _run([tool, "--conf", str(ceph.conf), "--id", ceph.user, "fs", "authorize",
                        ceph.fs_name, entity, str(user.path), "rw" if user.writable else "r"],
                       timeout=timeout, what=f"authorize {entity}")
        write_if_changed(path, keyring.encode(), mode=0o600)
        done += 1
    log.info("nfs.ganesha_ceph.users authorized=%d", done)
    return done


def _keyring_path(ceph: CephExports, entity: str, *, timeout: float) -> Path:
    found = _run(["ceph-conf", "--conf", str(ceph.conf), "--name", entity, "--lookup",
                  "keyring"], timeout=timeout, what=f"keyring of {entity}").strip()
    first = found.split(",")[0].strip()
    if not first.startswith("/"):
        raise ExternalToolError(f"no keyring path for {entity} in {ceph.conf}: {found!r}",
                                hint="set `keyring = /etc/ceph/$cluster.$name.keyring`")
    return Path(first)


def _run(argv: list[str], *, timeout: float, what: str) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except FileNotFoundError:
        raise ExternalToolError(f"{argv[0]} not found", hint="apt-get install ceph-common"
                                ) from None
    except subprocess.TimeoutExpired:
        raise ExternalToolError(f"{what}: no answer from Ceph in {timeout} s",
                                hint="is the cluster up? `ceph -s`") from None
    if proc.returncode != 0:
        raise ExternalToolError(f"{what} failed ({proc.returncode}): "
                                f"{proc.stderr.strip()[-300:]}", hint="check the cephx user")
    return proc.stdout


def join_recovery_db(ceph: CephExports, *, tool: str = GRACE_TOOL,
                     timeout: float = 60) -> None:
    """Make `ceph.nodeid` a member of the grace database (nothing if it is one already)."""
    argv = grace_command(ceph, "add", ceph.nodeid, tool=tool)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except FileNotFoundError:
        raise ExternalToolError(f"{tool} not found",
                                hint="apt-get install nfs-ganesha-rados-grace") from None
    except subprocess.TimeoutExpired:
        raise ExternalToolError(f"{tool} add {ceph.nodeid}: no answer from Ceph in {timeout} s",
                                hint=f"is the cluster of {ceph.conf} up? `ceph -s`") from None
    if proc.returncode != 0:
        raise ExternalToolError(
            f"{tool} add {ceph.nodeid} failed ({proc.returncode}): "
            f"{proc.stderr.strip()[-300:]}", hint=f"check {ceph.conf} and the cephx user")
    log.info("nfs.ganesha_ceph.member nodeid=%s pool=%s ns=%s", ceph.nodeid, ceph.pool,
             ceph.namespace)


def evict_instance_sessions(ceph: CephExports, *, pid: int, tool: str = "ceph",
                            timeout: float = 60) -> int:
    """Evict the CephFS sessions of the ganesha instance `ceph.nodeid` that ran as `pid`
    (stopped by now). The MDS keeps a stopped ganesha's sessions, with their capabilities,
    for a successor to reclaim (their uuid is `ganesha-NODEID-…`); until then other
    clients' changes to those files wait. The pid makes sure that a successor that has
    already reclaimed them (same uuid, another process) keeps its own. Returns how many."""
    mds = f"mds.{ceph.fs_name}:0"  # one active MDS rank (the test cluster, a small site)
    base = [tool, "--conf", str(ceph.conf), "--id", ceph.user, "tell", mds]
    listed = json.loads(_run([*base, "session", "ls", "--format", "json"], timeout=timeout,
                             what="list the MDS sessions") or "[]")
    prefix = f"ganesha-{ceph.nodeid}-"
    evicted = 0
    for session in listed if isinstance(listed, list) else []:
        meta = session.get("client_metadata") if isinstance(session, dict) else None
        if not isinstance(meta, dict) or not str(meta.get("uuid", "")).startswith(prefix) \
                or str(meta.get("pid", "")) != str(pid):
            continue
        _run([*base, "client", "evict", f"id={session['id']}"], timeout=timeout,
             what=f"evict CephFS session {session['id']}")
        evicted += 1
    log.info("nfs.ganesha_ceph.evicted nodeid=%s pid=%d sessions=%d", ceph.nodeid, pid, evicted)
    return evicted
