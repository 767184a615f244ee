"""Removing nodes everywhere: their inventory entries, then their exports, then their
directories (archived under HOME/archive, never deleted silently).

    for step in remove_nodes(store, paths, "node[03-04]"):
        match step:
            case NodesRemoved(changes=changes): ...
            case NodeDirArchived(node=name, archive=tarball): ...

Each step is yielded once it is done, so a caller shows the removal even when a later
archive fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from oneroot.inventory.store import InventoryStore
from oneroot.model import NfsServerKind
from oneroot.model.inventory import Change
from oneroot.model.paths import Paths
from oneroot.model.resolved import ResolvedCluster, resolve_cluster
from oneroot.nfs.knfsd import EXPORTS_FILE
from oneroot.ops import inventory as inv_ops
from oneroot.ops.nfs_serving import apply_nfs, ganesha_files
from oneroot.ops.overlays import archive_node_dir


@dataclass(frozen=True, slots=True, kw_only=True)
class NodesRemoved:
    """The inventory no longer has these nodes."""

    changes: tuple[Change, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeDirArchived:
    """A removed node's layer and identity are saved in `archive` and gone from disk."""

    node: str
    archive: Path


RemovalStep = NodesRemoved | NodeDirArchived


def remove_nodes(store: InventoryStore, paths: Paths, pattern: str, *,
                 keep_dir: bool = False) -> Iterator[RemovalStep]:
    """Remove the nodes `pattern` names; unless `keep_dir`, drop their exports, then archive
    and remove their directories."""
    changes = inv_ops.remove_nodes(store, pattern)
    after = resolve_cluster(store.load())
    yield NodesRemoved(changes=tuple(changes))
    if keep_dir:
        return
    _reapply_nfs(after, paths)
    for ch in changes:
        archive = archive_node_dir(after, paths, ch.name)
        if archive is not None:
            yield NodeDirArchived(node=ch.name, archive=archive)


def _reapply_nfs(cluster: ResolvedCluster, paths: Paths) -> None:
    """Drop removed nodes' exports before their directories move (no export of a gone dir).

    Only where NFS was set up already (its config exists): removing a node from an inventory
    that is only rendered must not start exporting anything."""
    config = (ganesha_files(paths).conf
              if NfsServerKind(cluster.settings.nfs_server).is_ganesha else EXPORTS_FILE)
    if config.exists():
        apply_nfs(cluster, paths)
