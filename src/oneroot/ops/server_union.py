"""Server-side union nodes (`union=server`): which nodes, over which layers, mounted where.

A node in this mode boots one plain NFS root, `SERVER:<state_dir>/<node>/merged`: the server
unions the node's layers there (`oneroot.nfs.server_union`) and exports the merged tree rw to
that node alone; the node's raw directory is not exported at all. Exporting and the remount
dance (unexport → unmount → mount → export) live in `ops.nfs_serving`, which calls this.
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath

from oneroot.model.resolved import ResolvedCluster
from oneroot.nfs.server_union import (
    UnionSpec,
    UnionStatus,
    UnionUnsupported,
    mount_union,
    mounted_unions,
    same_mount_ns,
    union_spec,
    unmount_union,
)
from oneroot.ops.boot import union_merged_dir
from oneroot.ops.nodes_fs import group_layer, node_layer
from oneroot.render.cluster import needs_view
from oneroot.rootspec import NfsLayer, parse

log = logging.getLogger(__name__)


def _layer_files(path: Path) -> Path:
    """A diff-overlay directory used as a layer shows its `upper/` (as the initramfs does)."""
    return path / "upper" if (path / "upper").is_dir() and (path / "work").is_dir() else path


def node_union_spec(cluster: ResolvedCluster, name: str) -> UnionSpec:
    """The node's union: the same layers its `root=` would name in client mode, topmost
    first. Refused (`UnionUnsupported`) over the server's live `/`, over an image that holds
    the state dir, or with an extra layer on another server."""
    s = cluster.settings
    r = cluster.node(name)
    image = r.image
    if image.root != PurePosixPath("/") and needs_view(image.root, state_dir=s.state_dir,
                                        group_dir=s.group_dir):
        raise UnionUnsupported(
            f"node {name}'s image {image.name} ({image.root}) holds the state or group dir: "
            "a union over it would contain the node's own upper layer",
            hint="keep images outside the state dir, or set union=client")
    bottom_up = [Path(image.root)]
    for text in r.profile.extra_layers:
        for layer in parse(text).layers:
            if not isinstance(layer, NfsLayer):
                continue
            if layer.server != str(s.server_address):
                raise UnionUnsupported(
                    f"node {name}'s extra layer {layer.server}:{layer.path} is on another "
                    "server: this server cannot union it",
                    hint="copy the layer to this server, or set union=client")
            bottom_up.append(_layer_files(Path(layer.path)))
    for group in cluster.group_layers(r):
        bottom_up.append(group_layer(cluster.dirs, group).upper)
    dirs = node_layer(cluster.dirs, name)
    assert Path(union_merged_dir(s, name)) == dirs.root / "merged"
    return union_spec(name, lowers=reversed(bottom_up), node_dir=dirs.root)


def check_union_nodes(cluster: ResolvedCluster) -> dict[str, UnionSpec]:
    """Every server-side union node's spec; the first refusal is raised."""
    return {name: node_union_spec(cluster, name) for name in cluster.union_nodes()}


def union_ns_pid(nfs_server_pid: int | None) -> int | None:
    """Where unions must be mounted: the NFS server's mount namespace when it runs in
    another one (`oneroot serve` under `ip netns exec`), else ours (None)."""
    if nfs_server_pid is None or same_mount_ns(nfs_server_pid):
        return None
    return nfs_server_pid


def mount_unions(specs: dict[str, UnionSpec], *, ns_pid: int | None) -> list[UnionStatus]:
    """Mount every union that is not mounted. One that is mounted over other layers stays as
    it is (its node mounts it now); its node's next boot remounts it."""
    out = []
    for spec in specs.values():
        status = mount_union(spec, ns_pid=ns_pid)
        if status.stale:
            log.info("nfs.union.stale node=%s reason=layers changed; remounted at its next "
                     "boot", spec.node)
        out.append(status)
    return out


def stale_unions(cluster: ResolvedCluster, *, ns_pid: int | None) -> list[UnionSpec]:
    """Unions mounted under the state dir whose node is gone or no longer `union=server`."""
    keep = set(cluster.union_nodes())
    out = []
    for name, entry in sorted(mounted_unions(cluster.dirs.state_dir, ns_pid=ns_pid).items()):
        if name not in keep:
            node_dir = entry.mount_point.parent
            out.append(UnionSpec(node=name, lowers=(), upper=node_dir / "upper",
                                 work=node_dir / "work", mountpoint=entry.mount_point))
    return out


def unmount_unions(specs: list[UnionSpec], *, ns_pid: int | None) -> None:
    """Unmount (after they are unexported) the given unions."""
    for spec in specs:
        unmount_union(spec, ns_pid=ns_pid)
