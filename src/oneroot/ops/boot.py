"""What each node boots: its layers (`root=`), command line and boot files."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import PurePosixPath

from oneroot.model.cluster import NfsServerKind, ResolvedNode, Settings
from oneroot.model.haservers import find_ha_server
from oneroot.model.resolved import ResolvedCluster
from oneroot.ops.image_block import block_file, top_file
from oneroot.rootspec import Mode, NfsLayer, RootSpec, TmpfsLayer, format_spec, parse


def union_merged_dir(s: Settings, node: str) -> PurePosixPath:
    """Where the server mounts a server-side union node's merged tree (and exports it from):
    inside the node's own directory, next to `upper/` and `work/`."""
    return s.diff_overlay_dir(node) / "merged"


def nfs_server_address(s: Settings, pinned: str | None) -> IPv4Address:
    """Where a node mounts its layers from.

    Without `ha_servers`: the server_address (the server answering, with `serve
    --server-address`). With them, always a service address, which keepalived moves to a
    live peer when its server dies (`oneroot nfs keepalived`): the one of the node's `server`
    if it has one, else the one of the server answering, whose server_address is its host
    address there. A host address never moves: a node mounting from it would hang with its
    server, and boot again only to hang again."""
    if pinned:
        return find_ha_server(s.ha_servers, pinned).service
    for server in s.ha_servers:
        if s.server_address == server.host:
            return server.service
    return s.server_address


def node_root_spec(cluster: ResolvedCluster, r: ResolvedNode) -> RootSpec:
    """The node's layers, bottom-most first: image, extra layers, group layers, its own dir,
    from `nfs_server_address`.

    The node's own directory is the rw top (the seed's line), or ro under a tmpfs when the
    node is ephemeral (the seed's `;ro;tmpfs`). A server-side union node mounts one layer,
    the merged tree the server exports to it (ro under a tmpfs when ephemeral). A
    `union=block` node loop-mounts its image version's EROFS file and its own ext4 file (a
    tmpfs when ephemeral); extra and group layers are not part of it.
    """
    s = cluster.settings
    p = r.profile
    server = str(nfs_server_address(s, p.server))
    options = p.nfs_option_list
    if p.block_union:
        erofs = NfsLayer(server=server, path=block_file(s, r.image), mode=Mode.RO,
                         options=("loop=erofs", *options))
        top: NfsLayer | TmpfsLayer = TmpfsLayer() if p.ephemeral else NfsLayer(
            server=server, path=top_file(s, r.name), mode=Mode.RW,
            options=("loop=ext4", *options))
        return RootSpec(layers=(erofs, top))
    if p.server_union:
        merged = NfsLayer(server=server, path=union_merged_dir(s, r.name),
                          mode=Mode.RO if p.ephemeral else Mode.RW, options=options)
        return RootSpec(layers=(merged, TmpfsLayer()) if p.ephemeral else (merged,))
    layers: list[NfsLayer | TmpfsLayer] = [
        NfsLayer(server=server, path=r.image.root, mode=Mode.RO, options=options)
    ]
    for text in p.extra_layers:
        for layer in parse(text).layers:
            if isinstance(layer, NfsLayer):
                layers.append(NfsLayer(server=layer.server, path=layer.path, mode=Mode.RO,
                                       options=layer.options or options))
    for group in cluster.group_layers(r):
        layers.append(NfsLayer(server=server, path=s.group_layer_dir(group), mode=Mode.RO,
                               options=options))
    own = s.diff_overlay_dir(r.name)
    if p.ephemeral:
        layers.append(NfsLayer(server=server, path=own, mode=Mode.RO, options=options))
        layers.append(TmpfsLayer())
    else:
        layers.append(NfsLayer(server=server, path=own, mode=Mode.RW, options=options))
    return RootSpec(layers=tuple(layers))


def root_spec_text(cluster: ResolvedCluster, r: ResolvedNode) -> str:
    return format_spec(node_root_spec(cluster, r))


# FSAL_CEPH (nfs-ganesha 4.3) advertises the NFSv4 ACL attribute but returns none for a file
# without a POSIX ACL, so the Linux NFS client lists `system.nfs4_acl` on every file and fails
# to read it (EOPNOTSUPP). Copy-up copies every listed xattr and fails on that one: the node
# reads its lower layers through an xattr-less read-only fuse-overlayfs instead (60-union).
LOWER_XATTRS_OFF = "oneroot.union.lowerxattrs=off"


def storage_kernel_args(s: Settings) -> tuple[str, ...]:
    """Kernel arguments the storage backend needs on every node's command line (before the
    profile's `kernel_args`, which may override them)."""
    if s.nfs_server is NfsServerKind.GANESHA_CEPH:
        return (LOWER_XATTRS_OFF,)
    return ()
