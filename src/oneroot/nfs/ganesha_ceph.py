"""nfs-ganesha on CephFS: the `rados_cluster` recovery database its instances share.

Each ganesha instance (one per service address) is a member of the grace database under its
nodeid; an instance that is not a member refuses to start. `ganesha-rados-grace add` is
idempotent and creates the pool if it is missing (a site's Ceph admin should create it with
the cluster's replication: `ceph osd pool create nfs-ganesha`).
"""

from __future__ import annotations

import logging
import subprocess

from oneroot.errors import ExternalToolError
from oneroot.render.context import CephExports

log = logging.getLogger(__name__)

GRACE_TOOL = "ganesha-rados-grace"


def grace_command(ceph: CephExports, *args: str, tool: str = GRACE_TOOL) -> list[str]:
    return [tool, "--cephconf", str(ceph.conf), "--userid", ceph.user, "--pool", ceph.pool,
            "--ns", ceph.namespace, *args]


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
