"""`oneroot nfs apply` / `nfs status` and the ganesha supervisor `oneroot serve` runs.

Applying is: layer directories and identities → masked views of image roots that are the
server's `/` → the unions of `union=server` nodes → the exports (knfsd: exports file +
`exportfs -ra`; ganesha: its config, and a SIGHUP to the running ganesha that `oneroot serve`
supervises) → unmounting unions no longer exported. Every step is idempotent.

A server-side union is replaced only while unexported (the NFS server holds it otherwise):
`union_released(cluster, paths, node)` unexports the node, unmounts its union, lets the caller
change its layer, mounts it again and exports it again (overlay edits; a node's boot).
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from oneroot.errors import ConfigError, ExternalToolError
from oneroot.fsutil import write_if_changed
from oneroot.model import NfsServerKind, Settings
from oneroot.model.paths import Paths
from oneroot.model.resolved import ResolvedCluster
from oneroot.nfs import (
    GaneshaFiles,
    GaneshaServer,
    ViewSpec,
    apply_exports,
    mount_view,
    render_config,
)
from oneroot.nfs.ganesha import running_pid
from oneroot.nfs.ganesha_ceph import ExportUser, authorize_export_users, join_recovery_db
from oneroot.nfs.knfsd import (
    EXPORTS_FILE,
    JunctionBind,
    bind_junctions,
    expire_clients,
    stray_binds,
    unbind_junctions,
)
from oneroot.nfs.server_union import (
    UnionSpec,
    UnionUnsupported,
    mount_union,
    ns_mounts,
    union_status,
    unmount_union,
)
from oneroot.nfs.view import MountEntry, mount_at, read_mounts
from oneroot.ops.canary import canary_readers
from oneroot.ops.catalog import BootCatalog
from oneroot.ops.exportids import keep_export_ids, load_export_ids
from oneroot.ops.image_block import ensure_blocks, ensure_tops
from oneroot.ops.image_versions import booted_versions
from oneroot.ops.imagefs import ensure_images_fs, require_images_fs
from oneroot.ops.knfsd_layout import check_subtrees, knfsd_layout
from oneroot.ops.knfsd_subtree import MustReboot, newly_checked, running_nodes
from oneroot.ops.layerfs import is_layer_fs
from oneroot.ops.nodes_fs import group_layer, prepare_group_layers, prepare_nodes
from oneroot.ops.runlevels import apply_runlevels
from oneroot.ops.server_union import (
    check_union_nodes,
    mount_unions,
    node_union_spec,
    stale_unions,
    union_ns_pid,
    unmount_unions,
)
from oneroot.ops.union_fs import check_union_layers
from oneroot.ops.views import image_view
from oneroot.render.cluster import cephfs_paths, nfs_exports, render_exports, with_views
from oneroot.render.context import Access, CephExports, ClusterContext, NfsExport

log = logging.getLogger(__name__)

GANESHA_PROTOCOLS = (4,)  # NFSv3 would need rpcbind running
RELOAD_TIMEOUT = 10.0
KNFSD_PROTOCOLS = (3, 4)


@dataclass(frozen=True, slots=True, kw_only=True)
class NfsPlan:
    kind: NfsServerKind
    ctx: ClusterContext
    views: dict[str, ViewSpec]
    text: str  # the exports file or the ganesha config
    unions: dict[str, UnionSpec] = dataclasses.field(default_factory=dict)
    # Every export id the plan uses (ganesha's Export_Id, knfsd's fsid): the persisted ones,
    # and new ones that applying the plan saves (`ops.exportids`) before the server sees them.
    export_ids: dict[str, int] = dataclasses.field(default_factory=dict)
    # knfsd: layer dirs bound at their junctions in the NFSv4 root view (ops.knfsd_layout).
    binds: tuple[JunctionBind, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class NfsApplyResult:
    plan: NfsPlan
    config_path: Path
    changed: bool
    applied: str  # "exportfs -ra", "ganesha SIGHUP", "written" (nothing running)
    # knfsd: running nodes whose export turned `subtree_check` (`ops.knfsd_subtree`).
    must_reboot: tuple[MustReboot, ...] = ()


def ganesha_files(paths: Paths) -> GaneshaFiles:
    return GaneshaFiles.in_dir(paths.run_dir / "ganesha")


def nfs_plan(cluster: ResolvedCluster, paths: Paths, *, kind: NfsServerKind | None = None,
             protocols: tuple[int, ...] | None = None, port: int = 2049,
             bind: ipaddress.IPv4Address | None = None,
             unexported: Iterable[str] = (),
             running: Iterable[str] | None = None,
             mounts: list[MountEntry] | None = None) -> NfsPlan:
    """What would be exported, and the file that says so. Pure but for reading the host's
    SSH key names (masked in views), the persisted export ids (never written here) and, for
    knfsd, the mount table (`mounts`, default ours: which image dirs are filesystems of their
    own; the others are exported `subtree_check`, `ops.knfsd_layout.check_subtrees`).
    `unexported` nodes are left out (while their union is remounted). Image versions nodes
    still run stay exported (`running`: NAME@N; default: read from the boot events). Raises
    `UnionUnsupported` for a server-side union node it cannot serve."""
    s = cluster.settings
    kind = NfsServerKind(kind or s.nfs_server)  # tests may give a plain string
    protocols = protocols or (GANESHA_PROTOCOLS if kind.is_ganesha else KNFSD_PROTOCOLS)
    catalog = BootCatalog(cluster, export_ids=load_export_ids(paths))
    booted: dict[str, str] = {}
    if running is None:
        booted = {n: v for n, v in booted_versions(paths).items() if n in cluster.nodes}
        running = sorted(set(booted.values()))
    ctx = catalog.cluster_context(nfs_protocols=protocols, running=running,
                                  readers=canary_readers(paths), running_nodes=booted)
    ctx = dataclasses.replace(ctx, nfs_port=port)
    unions = check_union_nodes(cluster)
    left_out = set(unexported)
    if left_out:
        ctx = dataclasses.replace(ctx, nodes=tuple(n for n in ctx.nodes
                                                   if n.name not in left_out))
    if bind is not None:
        ctx = dataclasses.replace(ctx, settings=dataclasses.replace(s, server_address=bind))
    if kind is NfsServerKind.GANESHA_CEPH:
        ctx = dataclasses.replace(ctx, ceph=ceph_exports(ctx.settings, unions))
        return NfsPlan(kind=kind, ctx=ctx, views={}, text=render_config(ctx, {}),
                       export_ids=catalog.export_ids)
    binds: tuple[JunctionBind, ...] = ()
    views = {}
    for image in ctx.images:
        if image.block:  # EROFS files, not a tree: never a view
            continue
        spec = image_view(
            cluster, paths, image.name,
            # a union node's export is its merged dir: that is the junction the view needs
            nodes=[f"{n.name}/merged" if n.name in unions else n.name for n in ctx.nodes],
            groups=[g.name for g in ctx.group_layers],
            # images exported as they are in HOME (HOME/images, block_dir): ganesha looks
            # their pseudo paths up through the view
            exports=[i.path for i in ctx.images if i.name != image.name])
        if spec is not None:
            views[image.name] = spec
    if kind is NfsServerKind.GANESHA:
        _check_unions_not_in_views(unions, views)
        text = render_config(ctx, {name: v.mountpoint for name, v in views.items()})
    else:
        mounts = read_mounts() if mounts is None else mounts
        # what `nfs apply` cannot give a filesystem of its own (an image; an extra layer)
        check_union_layers(cluster, paths, unions, mounts, fixable=False)
        knfsd_ctx, binds = knfsd_layout(check_subtrees(
            with_views(ctx, {name: PurePosixPath(v.mountpoint) for name, v in views.items()}),
            mounts), views)
        text = render_exports(knfsd_ctx)
    return NfsPlan(kind=kind, ctx=ctx, views=views, text=text, unions=unions,
                   export_ids=catalog.export_ids, binds=binds)


def rendered_configs(cluster: ResolvedCluster, paths: Paths) -> dict[str, NfsPlan]:
    """The NFS configs `oneroot render` writes (file name → the plan whose text it is): the
    exports file and the ganesha config, each the plan `oneroot nfs apply` and `oneroot
    serve` apply for that server, to the byte (running versions narrowed to the nodes that
    run them, `lab try` readers, knfsd's junction binds, ganesha's protocols, ganesha-ceph's
    CephFS exports).
    The file of the server the settings do not name is left out where that server would
    refuse the inventory (ganesha and a union inside a masked view); the named server's
    refusal is raised, as `nfs apply` raises it."""
    named = NfsServerKind(cluster.settings.nfs_server)
    kinds = {"exports": NfsServerKind.KNFSD,
             "ganesha.conf": named if named.is_ganesha else NfsServerKind.GANESHA}
    plans = {}
    for file, kind in kinds.items():
        try:
            plans[file] = nfs_plan(cluster, paths, kind=kind)
        except UnionUnsupported:
            if kind is named:
                raise
            log.info("render.nfs_config_left_out file=%s server=%s reason=union refused",
                     file, kind.value)
    return plans


def ceph_exports(settings: Settings, unions: Mapping[str, UnionSpec]) -> CephExports:
    """nfs_server=ganesha-ceph: what the ganesha config needs to export from CephFS. The
    instance's recovery nodeid is its service address, so the server that takes over an
    address (failover) runs that address's instance and its clients reclaim their state."""
    if settings.cephfs_mount is None:
        raise ConfigError("nfs_server=ganesha-ceph needs cephfs_mount: where this server "
                          "mounts CephFS",
                          hint="mount CephFS (ceph-fuse or the kernel client) and `oneroot "
                               "settings set cephfs_mount=/mnt/cephfs`")
    if unions:
        raise UnionUnsupported(
            f"node {sorted(unions)[0]} has union=server, which nfs_server=ganesha-ceph does "
            "not serve: its upper dir would be in CephFS, and overlayfs refuses a CephFS upper "
            "(no RENAME_WHITEOUT: \"upper fs missing required features\"); ganesha's "
            "FSAL_CEPH exports CephFS itself, not an overlayfs mount",
            hint="set union=client for it (docs/ceph.md: modes per storage backend)")
    return CephExports(mount=settings.cephfs_mount, conf=settings.ceph_conf,
                       user=settings.ceph_user, fs_name=settings.ceph_fs,
                       nodeid=str(settings.server_address))


def ceph_export_users(ctx: ClusterContext) -> list[ExportUser]:
    """ganesha-ceph: one cephx user per export, its MDS caps limited to that export's path
    in CephFS (read-only for read-only exports)."""
    assert ctx.ceph is not None
    exports = nfs_exports(ctx)
    paths = cephfs_paths(ctx, exports)
    return [ExportUser(name=ctx.ceph.export_user(e.export_id, paths[e.path]), path=paths[e.path],
                       writable=e.access is Access.RW) for e in exports]


def _check_unions_not_in_views(unions: dict[str, UnionSpec],
                               views: dict[str, ViewSpec]) -> None:
    """A union's export must not be a junction inside a masked view: nfs-ganesha 4.3 crashes
    (SIGSEGV) when it unexports such a nested export on SIGHUP, and every remount of the
    union unexports it. Measured here; exports below the pseudo root are fine."""
    for spec in unions.values():
        for view in views.values():
            if spec.mountpoint.is_relative_to(view.lower):
                raise UnionUnsupported(
                    f"node {spec.node}'s server-side union ({spec.mountpoint}) would be "
                    f"exported inside the masked view of image {view.name} ({view.lower}); "
                    "nfs-ganesha crashes when it unexports such a nested export, which every "
                    "remount of the union does",
                    hint=f"keep the state dir outside image {view.name}'s root (or stop "
                         "exporting that image), or set union=client")


def apply_nfs(cluster: ResolvedCluster, paths: Paths, *,
              exportfs: str = "exportfs", exports_file: Path = EXPORTS_FILE,
              plan: NfsPlan | None = None) -> NfsApplyResult:
    """Make the disk match the inventory and tell the NFS server. Idempotent."""
    plan = plan or nfs_plan(cluster, paths)
    keep_export_ids(paths, plan.export_ids)
    files = ganesha_files(paths)
    pid = running_pid(files) if plan.kind.is_ganesha else None
    ns_pid = union_ns_pid(pid)
    target = ExportTarget(exportfs=exportfs, exports_file=exports_file)
    if plan.kind is NfsServerKind.KNFSD:
        _release_unions_to_move(cluster, paths, plan, target)
    # Layers of their own (layer_fs=own; knfsd: union nodes') are mounted here and in
    # ganesha's namespace.
    prepare_group_layers(cluster, ns_pid=ns_pid, server_running=pid is not None)
    prepare_nodes(cluster, paths, ns_pid=ns_pid, server_running=pid is not None)
    # Before the views and unions that may stack on an image: HOME/images its own fs too.
    ensure_images_fs(paths, cluster.settings, ns_pid=ns_pid, server_running=pid is not None)
    require_images_fs(paths, ns_pid=ns_pid)  # never the bare mount point (unmounted by hand)
    ensure_tops(cluster)  # after the layers: a new top starts with the node's identity files
    # After the node layers: for an image that is the server's live `/`, runlevel targets go
    # into each node's own layer instead of the image.
    apply_runlevels(cluster)
    for spec in plan.views.values():
        mount_view(spec)
    ensure_blocks(cluster, {name: Path(v.mountpoint) for name, v in plan.views.items()})
    # every layer a filesystem of its own now (a layer that could not move: refused)
    check_union_layers(cluster, paths, plan.unions, ns_mounts(ns_pid), fixable=True)
    mount_unions(plan.unions, ns_pid=ns_pid)
    stale = stale_unions(cluster, ns_pid=ns_pid)
    if plan.kind is NfsServerKind.KNFSD:
        bind_junctions(plan.binds)
        before = _read_text(exports_file)
        result = apply_exports(plan.text, path=exports_file, exportfs=exportfs)
        unbind_junctions(_stray_binds(plan))
        unmount_unions(stale, ns_pid=ns_pid)
        reboot = _must_reboot(cluster, paths, before, plan.text) if result.applied else []
        return NfsApplyResult(plan=plan, config_path=exports_file, changed=result.changed,
                              applied="exportfs -ra" if result.applied else "unchanged",
                              must_reboot=tuple(reboot))
    if plan.ctx.ceph is not None:  # a new export's cephx user exists before ganesha uses it
        authorize_export_users(plan.ctx.ceph, ceph_export_users(plan.ctx))
    changed = write_if_changed(files.conf, plan.text.encode())
    applied = "written"
    if changed and pid is not None:
        _sighup_ganesha(files, pid, wait=bool(stale))
        applied = "ganesha SIGHUP"
    unmount_unions(stale, ns_pid=ns_pid)
    return NfsApplyResult(plan=plan, config_path=files.conf, changed=changed, applied=applied)


def _release_unions_to_move(cluster: ResolvedCluster, paths: Paths, plan: NfsPlan,
                            target: ExportTarget) -> None:
    """knfsd: the mounted unions of nodes whose own layer or group layer is still a
    directory (an older oneroot made it; `ops.union_fs`): unexported, unbound from the view
    and unmounted, so that `prepare_*` moves those layers into filesystems of their own and
    the apply mounts the unions again over them. A running node loses its file handles."""
    moving = [name for name, spec in sorted(plan.unions.items())
              if union_status(spec).mounted and (not is_layer_fs(spec.node_dir) or any(
                  not is_layer_fs(group_layer(cluster.dirs, g).root)
                  for g in cluster.group_layers(cluster.node(name))))]
    if not moving:
        return
    log.warning("nfs.union.layers_moving nodes=%s hint=%s", ",".join(moving),
                "their layers move to filesystems of their own; reboot them")
    _export(cluster, paths, target, unexported=tuple(moving))
    binds = tuple(b for name in moving for b in plan.binds
                  if b.source == plan.unions[name].mountpoint)
    unbind_junctions(binds)
    for name in moving:
        unmount_union(plan.unions[name])


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _must_reboot(cluster: ResolvedCluster, paths: Paths, before: str, after: str
                 ) -> list[MustReboot]:
    """Running nodes whose export the apply turned `subtree_check`: their old handles go
    stale (`ops.knfsd_subtree`)."""
    addresses = {name: r.node.address for name, r in cluster.nodes.items()}
    return newly_checked(before, after, addresses, running_nodes(paths))


def _stray_binds(plan: NfsPlan) -> tuple[JunctionBind, ...]:
    """knfsd: binds in the views at junctions of exports gone since (`stray_binds`): a stale
    union's would keep the union, and its upper dir, alive; a version's, its directory."""
    return stray_binds(read_mounts(), plan.binds,
                       [Path(v.mountpoint) for v in plan.views.values()])


def _sighup_ganesha(files: GaneshaFiles, pid: int, *, wait: bool,
                    timeout: float = RELOAD_TIMEOUT) -> None:
    """Make ganesha re-read its exports; with `wait`, until its log says it is done."""
    try:
        offset = files.log.stat().st_size
    except FileNotFoundError:
        offset = 0
    os.kill(pid, signal.SIGHUP)
    if not wait:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with files.log.open("rb") as f:
                f.seek(offset)
                if b"Reread exports complete" in f.read():
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise ExternalToolError(f"ganesha did not confirm the export reload within {timeout} s",
                            hint=f"see {files.log}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportTarget:
    """How to reach the running NFS server (the flags `oneroot serve` started it with)."""

    bind: ipaddress.IPv4Address | None = None
    port: int = 2049
    exportfs: str = "exportfs"
    exports_file: Path = EXPORTS_FILE


def log_must_reboot(item: MustReboot) -> None:
    """serve's line for a running node an apply left holding stale handles."""
    log.warning("nfs.must_reboot node=%s exports=%s reason=%s", item.node, ",".join(item.paths),
                "subtree_check now: the file handles it got before go stale")


def _export(cluster: ResolvedCluster, paths: Paths, target: ExportTarget, *,
            unexported: tuple[str, ...] = ()) -> list[MustReboot]:
    """Tell the running NFS server the exports, leaving `unexported` nodes out, and wait
    until it has let go of them. knfsd: the running nodes whose export it turned
    `subtree_check` (`ops.knfsd_subtree`), as `apply_nfs` says them."""
    plan = nfs_plan(cluster, paths, unexported=unexported, bind=target.bind, port=target.port)
    keep_export_ids(paths, plan.export_ids)
    files = ganesha_files(paths)
    pid = running_pid(files) if plan.kind.is_ganesha else None
    require_images_fs(paths, ns_pid=union_ns_pid(pid))
    if plan.kind is NfsServerKind.KNFSD:
        bind_junctions(plan.binds)  # a union mounted again is bound in the view again
        before = _read_text(target.exports_file)
        result = apply_exports(plan.text, path=target.exports_file, exportfs=target.exportfs)
        return _must_reboot(cluster, paths, before, plan.text) if result.applied else []
    if write_if_changed(files.conf, plan.text.encode()) and pid is not None:
        _sighup_ganesha(files, pid, wait=True)
    return []


@contextlib.contextmanager
def union_released(cluster: ResolvedCluster, paths: Paths, name: str,
                   target: ExportTarget = ExportTarget(), *,
                   must_reboot: Callable[[MustReboot], None] = log_must_reboot
                   ) -> Iterator[UnionSpec | None]:
    """Around a change of a `union=server` node's layer: unexport the node, unmount its
    union, yield (its upper dir is a plain directory now), mount the union again (over the
    lower layers as they are now) and export it again. Yields None and does nothing for a
    node whose union is not mounted (or that is not a server-side union node). Each running
    node whose export these applies turned `subtree_check` goes to `must_reboot` (knfsd: the
    exports are rendered anew, as `nfs apply` renders them).

    The node keeps its file handles (`index=on` decodes them again after the remount), but
    NFS calls it makes meanwhile fail: a running node sees its root go away for a moment.
    If the union cannot be mounted again, the node stays unexported (never its empty mount
    point) and the error says why.
    """
    if name not in cluster.union_nodes():
        yield None
        return
    spec = node_union_spec(cluster, name)
    ganesha = NfsServerKind(cluster.settings.nfs_server).is_ganesha
    ns_pid = union_ns_pid(running_pid(ganesha_files(paths)) if ganesha else None)
    if not union_status(spec, ns_pid=ns_pid).mounted:
        yield None
        return
    log.info("nfs.union.release node=%s", name)

    def export(unexported: tuple[str, ...] = ()) -> None:
        for item in _export(cluster, paths, target, unexported=unexported):
            must_reboot(item)

    export(unexported=(name,))
    try:
        if not ganesha:  # knfsd: its bind at the junction in the view holds the union too
            unbind_junctions(_binds_of(cluster, paths, spec, target))
        unmount_union(spec, ns_pid=ns_pid)
    except BaseException:
        export()
        raise
    try:
        yield spec
    finally:
        mount_union(spec, ns_pid=ns_pid)
        export()
        log.info("nfs.union.restored node=%s", name)


def _binds_of(cluster: ResolvedCluster, paths: Paths, spec: UnionSpec,
              target: ExportTarget) -> tuple[JunctionBind, ...]:
    """knfsd's binds of the union `spec` inside the NFSv4 root view (`ops.knfsd_layout`)."""
    plan = nfs_plan(cluster, paths, bind=target.bind, port=target.port)
    return tuple(b for b in plan.binds if b.source == spec.mountpoint)


def remount_union_for_boot(cluster: ResolvedCluster, paths: Paths, name: str,
                           target: ExportTarget = ExportTarget(), *,
                           must_reboot: Callable[[MustReboot], None] = log_must_reboot) -> bool:
    """A `union=server` node is booting: remount its union so it sees the lower layers as
    they are now (overlayfs caches lower dentries). False when there was nothing to do.

    On knfsd the node's NFSv4 client of its last boot is expired first: the node is between
    firmware and initramfs, so that client is dead, but knfsd keeps its opens (it never
    unmounted its root) and they would keep the old union, and its upper dir, in use."""
    if (name in cluster.union_nodes()
            and not NfsServerKind(cluster.settings.nfs_server).is_ganesha):
        expire_clients(cluster.nodes[name].node.address)
    with union_released(cluster, paths, name, target, must_reboot=must_reboot) as spec:
        return spec is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class ViewStatus:
    mountpoint: Path
    mounted: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class NfsStatus:
    """For `oneroot nfs status`: server kind, whether ganesha runs, views and exports."""

    server: NfsServerKind
    ganesha_pid: int | None
    config: Path
    views: dict[str, ViewStatus]
    exports: tuple[NfsExport, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "server": self.server.value,
            "ganesha_pid": self.ganesha_pid,
            "config": str(self.config),
            "views": {name: {"mountpoint": str(v.mountpoint), "mounted": v.mounted}
                      for name, v in self.views.items()},
            "exports": [{"path": str(e.path), "access": e.access.value,
                         "clients": list(e.clients)} for e in self.exports],
        }


def nfs_status(cluster: ResolvedCluster, paths: Paths) -> NfsStatus:
    files = ganesha_files(paths)
    plan = nfs_plan(cluster, paths)
    return NfsStatus(
        server=plan.kind, ganesha_pid=running_pid(files),
        config=files.conf if plan.kind.is_ganesha else EXPORTS_FILE,
        views={name: ViewStatus(mountpoint=v.mountpoint,
                                mounted=mount_at(v.mountpoint) is not None)
               for name, v in plan.views.items()},
        exports=nfs_exports(with_views(plan.ctx, {
            name: PurePosixPath(v.mountpoint) for name, v in plan.views.items()})))


def ganesha_server(cluster: ResolvedCluster, paths: Paths, *,
                   bind: ipaddress.IPv4Address | None = None, port: int = 2049,
                   binary: str = "ganesha.nfsd") -> GaneshaServer:
    """The supervisor `oneroot serve` runs (`tg.create_task(server.run())`); on an inventory
    change: `apply_nfs(...)` for the disk, then `await server.reload(nfs_plan(...).text)`."""
    kind = NfsServerKind(cluster.settings.nfs_server)
    if kind is NfsServerKind.GANESHA_CEPH and cluster.settings.ha_servers:
        # Its instance would take the service address's port from keepalived's instance.
        raise ConfigError("with ha_servers set, the ganesha-ceph instances are run by "
                          "`oneroot nfs keepalived`, not by serve",
                          hint="run `oneroot serve --no-nfs` beside `oneroot nfs keepalived "
                               "SERVER` (docs/ceph.md)")
    plan = nfs_plan(cluster, paths, kind=kind if kind.is_ganesha else NfsServerKind.GANESHA,
                    port=port, bind=bind)
    keep_export_ids(paths, plan.export_ids)
    if plan.ctx.ceph is not None:
        authorize_export_users(plan.ctx.ceph, ceph_export_users(plan.ctx))
        join_recovery_db(plan.ctx.ceph)  # rados_cluster: an instance must be a member
    return GaneshaServer(ganesha_files(paths), config=plan.text,
                         bind=bind or cluster.settings.server_address, port=port, binary=binary,
                         preflight=lambda: require_images_fs(paths))
