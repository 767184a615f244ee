"""Server-side unions under kernel nfsd: every layer of a `union=server` node on a filesystem
that holds only what that node may read.

Why: the node's root is an overlayfs that knfsd exports `no_subtree_check` (overlayfs makes no
connectable handles), and overlayfs decodes the node's file handles itself (Linux 6.1,
fs/overlayfs/export.c): an upper handle (`OVL_FH_FLAG_PATH_UPPER`) of a non-directory
wherever it is on the upper dir's filesystem (`ovl_acceptable` checks directories only); a
lower one wherever it is on the filesystem of any lower layer whose UUID the handle carries
(`ovl_check_origin_fh`). And ext4 skips the generation check for a handle whose generation is
0 (`ext4_nfs_get_inode`): an inode number guessed is enough. Measured in the knfsd server VM
(tests/e2e/test_knfsd.py, `test_forged_handles_through_a_server_union_are_refused`; docs/notes/
2026-12-07-f/union-knfsd-handles.md): with its layer and group layer directories of the
server's `/`, node03 read node01's layer and the server's /etc/shadow through its own export.

So, with knfsd (nfs-ganesha's `layer_fs=own` already does this for every layer):
- a union node's own layer (`upper`, `work`) is a filesystem of its own (`ops.layerfs`,
  made by `oneroot nfs apply` and serve; `owns_layer_fs`). A layer that was a directory is
  moved in: a mounted union over it is unexported and unmounted first (`apply_nfs`), and the
  overlayfs records that name the old filesystem are dropped (`forget_upper_fs`);
- each group layer of a union node is a filesystem of its own too (its members read it all);
- the image and any extra layer must be a filesystem's root (nothing but that layer on it), or
  on the filesystem mounted at `HOME/images` (images only; the nodes read them anyway).
  oneroot cannot move those: `nfs_plan` refuses the node (`oneroot render` and `nfs apply`
  alike, `union_layer_problems(fixable=False)`); after the layers are made, `apply_nfs`
  checks everything again before mounting a union (`fixable=True`), and doctor reports it.
"""

from __future__ import annotations

from pathlib import Path

from oneroot.model.cluster import NfsServerKind, Settings
from oneroot.model.paths import Paths
from oneroot.model.resolved import ResolvedCluster
from oneroot.nfs.server_union import UnionSpec, UnionUnsupported
from oneroot.nfs.view import MountEntry, filesystem_of, is_filesystem_root
from oneroot.overlay import LayerDirs


def owns_layer_fs(s: Settings, *, union: bool) -> bool:
    """Whether a layer is a filesystem of its own: every layer with nfs-ganesha's
    `layer_fs=own`; with knfsd, a union node's own layer and its group layers (`union`)."""
    return s.layer_fs.applies(s.nfs_server) or (union and s.nfs_server is NfsServerKind.KNFSD)


def union_groups(cluster: ResolvedCluster) -> set[str]:
    """The group layers some `union=server` node has."""
    return {g for n in cluster.union_nodes() for g in cluster.group_layers(cluster.node(n))}


def _alone(path: Path, mounts: list[MountEntry]) -> bool:
    """`path` is a filesystem's root, or the `upper` of a layer dir that is one."""
    return is_filesystem_root(path, mounts) or (
        path.name == "upper" and is_filesystem_root(path.parent, mounts))


def union_layer_problems(cluster: ResolvedCluster, paths: Paths, spec: UnionSpec,
                         mounts: list[MountEntry], *, fixable: bool) -> list[str]:
    """What of the union `spec` lies on a filesystem holding more than the node may read (one
    sentence each), with knfsd. Without `fixable`, only what `oneroot nfs apply` cannot fix
    (the image, extra layers); with it, the node's own layer and its group layers too."""
    if cluster.settings.nfs_server is not NfsServerKind.KNFSD:
        return []
    groups = {LayerDirs.group(cluster.dirs.group_dir, g).upper for g in cluster.group_layers(
        cluster.node(spec.node))}
    images = paths.home / "images"
    images_alone = is_filesystem_root(images, mounts)
    out = []
    if fixable and not is_filesystem_root(spec.node_dir, mounts):
        out.append(_where(f"its layer {spec.node_dir}", spec.node_dir, mounts))
    for lower in spec.lowers:
        if _alone(lower, mounts) or (not fixable and lower in groups):
            continue
        entry = filesystem_of(lower, mounts)
        if images_alone and entry is not None and entry.mount_point == images:
            continue
        out.append(_where(f"its layer {lower}", lower, mounts))
    return out


def _where(what: str, path: Path, mounts: list[MountEntry]) -> str:
    entry = filesystem_of(path, mounts)
    return f"{what} (on the filesystem at {entry.mount_point if entry else '?'})"


def check_union_layers(cluster: ResolvedCluster, paths: Paths, specs: dict[str, UnionSpec],
                       mounts: list[MountEntry], *, fixable: bool) -> None:
    """Refuse (`UnionUnsupported`) the first union node with a `union_layer_problems`."""
    for name, spec in sorted(specs.items()):
        problems = union_layer_problems(cluster, paths, spec, mounts, fixable=fixable)
        if problems:
            raise UnionUnsupported(
                f"node {name}'s server-side union has {'; '.join(problems)}, which holds "
                "more than that layer: through its union export the node reads any file "
                "there by a forged file handle (kernel nfsd; docs/security.md)",
                hint="give each layer a filesystem of its own (mount one at the image's "
                     "directory holding only it, or keep the image in HOME/images on a "
                     "filesystem of its own); `oneroot nfs apply` makes the node's own and "
                     "group layers one; or set union=client")
