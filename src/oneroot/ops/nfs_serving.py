"""`oneroot nfs apply` / `nfs status` and the ganesha supervisor `oneroot serve` runs.

Applying is: layer directories and identities → masked views of image roots that are the
server's `/` → the exports (knfsd: exports file + `exportfs -ra`; ganesha: its config, and a
SIGHUP to the running ganesha that `oneroot serve` supervises). Every step is idempotent.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import signal
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from oneroot.model import NfsServerKind
from oneroot.model.inventory import Inventory
from oneroot.nfs import (
    GaneshaFiles,
    GaneshaServer,
    ViewSpec,
    apply_exports,
    mount_view,
    needs_view,
    render_config,
    view_spec,
)
from oneroot.nfs.ganesha import running_pid
from oneroot.nfs.knfsd import EXPORTS_FILE
from oneroot.nfs.view import mount_at
from oneroot.ops.catalog import BootCatalog
from oneroot.ops.nodes_fs import prepare_group_layers, prepare_nodes
from oneroot.ops.paths import Paths
from oneroot.overlay.safefs import write_atomic
from oneroot.render.cluster import nfs_exports, render_exports
from oneroot.render.context import ClusterContext

GANESHA_PROTOCOLS = (4,)  # NFSv3 would need rpcbind running
KNFSD_PROTOCOLS = (3, 4)


@dataclass(frozen=True, slots=True, kw_only=True)
class NfsPlan:
    kind: NfsServerKind
    ctx: ClusterContext
    views: dict[str, ViewSpec]
    text: str  # the exports file or the ganesha config


@dataclass(frozen=True, slots=True, kw_only=True)
class NfsApplyResult:
    plan: NfsPlan
    config_path: Path
    changed: bool
    applied: str  # "exportfs -ra", "ganesha SIGHUP", "written" (nothing running)


def views_dir(paths: Paths) -> Path:
    return paths.home / "views"


def ganesha_files(paths: Paths) -> GaneshaFiles:
    return GaneshaFiles.in_dir(paths.run_dir / "ganesha")


def nfs_plan(inv: Inventory, paths: Paths, *, kind: NfsServerKind | None = None,
             protocols: tuple[int, ...] | None = None, port: int = 2049,
             bind: ipaddress.IPv4Address | None = None) -> NfsPlan:
    """What would be exported, and the file that says so. Pure but for reading the host's
    SSH key names (masked in views)."""
    s = inv.settings
    kind = kind or s.nfs_server
    protocols = protocols or (GANESHA_PROTOCOLS if kind is NfsServerKind.GANESHA
                              else KNFSD_PROTOCOLS)
    ctx = BootCatalog(inv).cluster_context(nfs_protocols=protocols)
    ctx = dataclasses.replace(ctx, nfs_port=port)
    if bind is not None:
        ctx = dataclasses.replace(ctx, settings=dataclasses.replace(s, server_address=bind))
    views = {
        image.name: view_spec(
            image.name, lower=Path(str(image.path)), views_dir=views_dir(paths),
            state_dir=s.state_dir, group_dir=s.group_dir,
            nodes=[n.name for n in ctx.nodes], groups=[g.name for g in ctx.group_layers],
            hidden_dirs=[PurePosixPath(str(paths.home))])
        for image in ctx.images
        if needs_view(image.path, state_dir=s.state_dir, group_dir=s.group_dir)
    }
    if kind is NfsServerKind.GANESHA:
        text = render_config(ctx, {name: v.mountpoint for name, v in views.items()})
    else:
        # knfsd has no per-export pseudo path: the view is exported at its own path, and
        # root= must name that path (see the report; not run against a real nfsd here).
        images = tuple(dataclasses.replace(i, path=PurePosixPath(str(views[i.name].mountpoint)))
                       if i.name in views else i for i in ctx.images)
        text = render_exports(dataclasses.replace(ctx, images=images))
    return NfsPlan(kind=kind, ctx=ctx, views=views, text=text)


def apply_nfs(inv: Inventory, paths: Paths, *, exportfs: str = "exportfs",
              exports_file: Path = EXPORTS_FILE, plan: NfsPlan | None = None) -> NfsApplyResult:
    """Make the disk match the inventory and tell the NFS server. Idempotent."""
    plan = plan or nfs_plan(inv, paths)
    prepare_group_layers(inv)
    prepare_nodes(inv, paths)
    for spec in plan.views.values():
        mount_view(spec)
    if plan.kind is NfsServerKind.KNFSD:
        result = apply_exports(plan.text, path=exports_file, exportfs=exportfs)
        return NfsApplyResult(plan=plan, config_path=exports_file, changed=result.changed,
                              applied="exportfs -ra" if result.applied else "unchanged")
    files = ganesha_files(paths)
    changed = write_atomic(files.conf, plan.text.encode())
    applied = "written"
    pid = running_pid(files)
    if changed and pid is not None:
        os.kill(pid, signal.SIGHUP)
        applied = "ganesha SIGHUP"
    return NfsApplyResult(plan=plan, config_path=files.conf, changed=changed, applied=applied)


def nfs_status(inv: Inventory, paths: Paths) -> dict[str, object]:
    """For `oneroot nfs status`: server kind, whether ganesha runs, which views are mounted."""
    files = ganesha_files(paths)
    pid = running_pid(files)
    plan = nfs_plan(inv, paths)
    return {
        "server": plan.kind.value,
        "ganesha_pid": pid,
        "config": str(files.conf if plan.kind is NfsServerKind.GANESHA else EXPORTS_FILE),
        "views": {name: {"mountpoint": str(v.mountpoint),
                         "mounted": mount_at(v.mountpoint) is not None}
                  for name, v in plan.views.items()},
        "exports": [{"path": str(e.path), "access": e.access.value, "clients": list(e.clients)}
                    for e in nfs_exports(plan.ctx)],
    }


def ganesha_server(inv: Inventory, paths: Paths, *, bind: ipaddress.IPv4Address | None = None,
                   port: int = 2049, binary: str = "ganesha.nfsd") -> GaneshaServer:
    """The supervisor `oneroot serve` runs (`tg.create_task(server.run())`); on an inventory
    change: `apply_nfs(...)` for the disk, then `await server.reload(nfs_plan(...).text)`."""
    plan = nfs_plan(inv, paths, kind=NfsServerKind.GANESHA, port=port, bind=bind)
    return GaneshaServer(ganesha_files(paths), config=plan.text,
                         bind=bind or inv.settings.server_address, port=port, binary=binary)
