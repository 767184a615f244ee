"""Removing nodes everywhere: their inventory entries, then their exports, then their
directories (archived under HOME/archive, never deleted silently).

    for step in remove_nodes(store, paths, "node[03-04]"):
        match step:
            case NodesRemoved(changes=changes): ...
            case NodeDirArchived(node=name, archive=tarball): ...
            case NodeMustReboot(reboot=item): print(item.message)

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
from oneroot.ops import inventory as inv_ops
from oneroot.ops.knfsd_subtree import MustReboot
from oneroot.ops.nfs_serving import ExportTarget, apply_nfs, ganesha_files
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


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeMustReboot:
    """A running node whose export the re-apply turned `subtree_check` (knfsd; `nfs apply`
    says the same)."""

    reboot: MustReboot


RemovalStep = NodesRemoved | NodeDirArchived | NodeMustReboot


def remove_nodes(store: InventoryStore, paths: Paths, pattern: str, *,
                 keep_dir: bool = False, target: ExportTarget | None = None
                 ) -> Iterator[RemovalStep]:
    """Remove the nodes `pattern` names; unless `keep_dir`, drop their exports (knfsd's through
    `target`), then archive and remove their directories."""
    changes = inv_ops.remove_nodes(store, pattern)
    after = resolve_cluster(store.load())
    yield NodesRemoved(changes=tuple(changes))
    if keep_dir:
        return
    for item in _reapply_nfs(after, paths, target or ExportTarget()):
        yield NodeMustReboot(reboot=item)
    for ch in changes:
        archive = archive_node_dir(after, paths, ch.name)
        if archive is not None:
            yield NodeDirArchived(node=ch.name, archive=archive)


def _reapply_nfs(cluster: ResolvedCluster, paths: Paths, target: ExportTarget
                 ) -> tuple[MustReboot, ...]:
    """Drop removed nodes' exports before their directories move (no export of a gone dir);
    the running nodes that apply leaves with stale handles.

    Only where NFS was set up already (its config exists): removing a node from an inventory
    that is only rendered must not start exporting anything."""
    config = (ganesha_files(paths).conf
              if NfsServerKind(cluster.settings.nfs_server).is_ganesha else target.exports_file)
    if not config.exists():
        return ()
    return apply_nfs(cluster, paths, exportfs=target.exportfs,
                     exports_file=target.exports_file).must_reboot
