"""Node and group layers on disk: their directories and each node's generated identity.

`prepare_nodes(cluster, paths)` is idempotent: run it after every inventory change (and before
exporting), it creates what is missing, repairs owners and modes in place, re-renders the
identity files that changed and never removes anything.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from oneroot.fsutil import UnsafePath
from oneroot.model.paths import ClusterDirs, Paths
from oneroot.model.resolved import ResolvedCluster
from oneroot.nfs.server_union import forget_upper_fs
from oneroot.ops.layerfs import DEFAULT_LAYER_SIZE, ensure_layer_fs, is_layer_fs, layer_image
from oneroot.ops.statefs import apply_layer_quota, make_layer_root
from oneroot.ops.union_fs import owns_layer_fs, union_groups
from oneroot.overlay import (
    IdentityStore,
    LayerDirs,
    NodeIdentity,
    ensure_layer,
    write_identity,
)
from oneroot.overlay.identity import SSH_KEY_TYPES

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class PreparedLayer:
    name: str
    dirs: LayerDirs
    dirs_changed: bool
    written: tuple[PurePosixPath, ...] = ()
    refused: str | None = None  # why the node's layer was left as it is


def identity_dir(paths: Paths, node: str) -> Path:
    """Where a node's seed, SSH host keys and manifest live (see `Paths.identity_dir`)."""
    return paths.identity_dir(node)


def _moves_in(root: Path) -> bool:
    """A layer directory with files that `ensure_layer_fs` is about to move into its own
    filesystem (no image made yet)."""
    if is_layer_fs(root) or os.path.lexists(layer_image(root)) or not root.is_dir():
        return False
    with os.scandir(root) as it:
        return any(True for _ in it)


def node_layer(dirs: ClusterDirs, node: str) -> LayerDirs:
    return LayerDirs.node(dirs.state_dir, node)


def group_layer(dirs: ClusterDirs, group: str) -> LayerDirs:
    return LayerDirs.group(dirs.group_dir, group)


def image_network_stacks(root: Path) -> tuple[bool, bool]:
    """(systemd-networkd, ifupdown) present in the image at `root`."""
    networkd = any((root / p).exists() for p in ("lib/systemd/systemd-networkd",
                                                  "usr/lib/systemd/systemd-networkd"))
    ifupdown = any((root / p).exists() for p in ("sbin/ifup", "usr/sbin/ifup"))
    return networkd, ifupdown


def node_identity(cluster: ResolvedCluster, name: str, image_root: Path) -> NodeIdentity:
    node = cluster.node(name).node
    networkd, ifupdown = image_network_stacks(image_root)
    return NodeIdentity(name=node.name, address=node.address, macs=node.macs,
                        domain=cluster.settings.domain, systemd_networkd=networkd,
                        ifupdown=ifupdown)


def prepare_node(cluster: ResolvedCluster, paths: Paths, name: str, *,
                 image_root: Path | None = None, ssh_keygen: str = "ssh-keygen",
                 ssh_key_types: tuple[str, ...] = SSH_KEY_TYPES,
                 ns_pid: int | None = None, server_running: bool = False) -> PreparedLayer:
    """The node's `<state_dir>/<node>/{upper,work}` and its identity files in `upper/`.

    `image_root` overrides where the node's image is on disk (tests; images built elsewhere).
    `ns_pid`: the NFS server's mount namespace, when not ours; `server_running`: whether it
    runs (`ensure_layer_fs`).
    """
    r = cluster.node(name)
    root = image_root or Path(r.image.root)
    dirs = node_layer(cluster.dirs, name)
    limit = r.profile.layer_quota_bytes
    s = cluster.settings
    if owns_layer_fs(s, union=r.profile.server_union):
        # A filesystem of its own (nfs-ganesha has no subtree check; a union's overlayfs
        # decodes handles anywhere on its layers' filesystems); its size is the limit.
        moving = r.profile.server_union and _moves_in(dirs.root)
        changed = ensure_layer_fs(dirs.root, size=limit or DEFAULT_LAYER_SIZE, ns_pid=ns_pid,
                                  server_running=server_running)
        if moving:  # overlayfs's records name the old filesystem
            forget_upper_fs(name, dirs.root)
        limit = None
    else:
        # On the state filesystem, a layer that can carry a quota (a btrfs subvolume).
        changed = make_layer_root(dirs.root)
    changed |= ensure_layer(dirs)
    if limit is not None and apply_layer_quota(dirs.root, limit) == "none":
        log.warning("statefs.quota_unenforced node=%s dir=%s hint=%s", name, dirs.root,
                    "the node's layer is not on the state filesystem (oneroot init)")
    result = write_identity(dirs, node_identity(cluster, name, root),
                            IdentityStore(paths.identity_dir(name), ssh_keygen=ssh_keygen,
                                          key_types=ssh_key_types),
                            image_root=root)
    return PreparedLayer(name=name, dirs=dirs, dirs_changed=changed, written=result.written)


def prepare_nodes(cluster: ResolvedCluster, paths: Paths, names: Iterable[str] | None = None, *,
                  image_root: Path | None = None,
                  ssh_key_types: tuple[str, ...] = SSH_KEY_TYPES,
                  ns_pid: int | None = None,
                  server_running: bool = False) -> list[PreparedLayer]:
    """`prepare_node` for each node. A node whose own layer holds what oneroot will not
    write through (a link where `upper/etc` should be, a tree too deep) is logged and left
    as it is: one node's layer never stops the others (or `oneroot serve`) from starting.
    A layer whose own filesystem cannot be mounted stops it (fail closed: its plain directory
    would be exported without the isolation)."""
    out = []
    for name in sorted(names if names is not None else cluster.nodes):
        try:
            out.append(prepare_node(cluster, paths, name, image_root=image_root,
                                    ssh_key_types=ssh_key_types, ns_pid=ns_pid,
                                    server_running=server_running))
        except UnsafePath as exc:
            log.warning("nodes.layer_refused node=%s error=%s", name, exc.message)
            out.append(PreparedLayer(name=name, dirs=node_layer(cluster.dirs, name),
                                     dirs_changed=False, refused=exc.message))
    return out


def prepare_group_layers(cluster: ResolvedCluster, *, ns_pid: int | None = None,
                         server_running: bool = False) -> list[PreparedLayer]:
    """`<group_dir>/<group>/upper` for every group that is a layer (`group_layer=true`)."""
    out = []
    s = cluster.settings
    unions = union_groups(cluster)
    for name in sorted(cluster.layer_groups):
        dirs = group_layer(cluster.dirs, name)
        own = owns_layer_fs(s, union=name in unions)
        changed = own and ensure_layer_fs(dirs.root, parent_mode=0o755, ns_pid=ns_pid,
                                          server_running=server_running)
        changed |= ensure_layer(dirs)
        out.append(PreparedLayer(name=name, dirs=dirs, dirs_changed=changed))
    return out
