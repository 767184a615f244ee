"""How kernel nfsd serves the seed's `root=` lines verbatim (docs/nfs.md, "knfsd layout").

knfsd has no per-export pseudo path (ganesha's `Pseudo`), so the masked view of the server's
`/` becomes the NFSv4 root instead (`fsid=0`): a node's `server:/` is the view. Every other
export a node mounts is bound at its own junction inside the view (the empty directory the
view keeps at its real path, e.g. `<view>/var/state/systems/node01`) and exported there, with
the clients and options of its real path, so `server:/var/state/systems/node01` names it over
NFSv4: each node's and group's layer (to its nodes alone), each image directory and version
(`HOME/images/NAME`, `/srv/images/NAME`; a version to the nodes that boot or run it) and the
block dir. The view itself is exported without `crossmnt`: another node walking to that path
sees the empty junction, not the export. Pure: the binds are applied by
`nfs.knfsd.bind_junctions`.

Which exports are `subtree_check` (`check_subtrees`: layers and images not a filesystem of
their own) is decided on the mount table `nfs_plan` reads, so `oneroot render` and `oneroot
nfs apply` write the same line.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path, PurePosixPath

from oneroot.nfs.knfsd import JunctionBind
from oneroot.nfs.view import MountEntry, ViewSpec, is_filesystem_root
from oneroot.render.context import ClusterContext


def _inside(view: ViewSpec, path: PurePosixPath) -> PurePosixPath | None:
    """`path` moved to its junction inside the view, if the view has that junction."""
    try:
        rel = path.relative_to(PurePosixPath(view.lower))
    except ValueError:
        return None
    if rel not in view.junctions:
        return None
    return PurePosixPath(view.mountpoint) / rel


def check_subtrees(ctx: ClusterContext, mounts: list[MountEntry]) -> ClusterContext:
    """`ctx` with `subtree_check` on every export whose directory is not the root of a
    filesystem of its own in `mounts` (the mount table knfsd resolves export paths in:
    rpc.mountd's, the host's, where `oneroot serve` and `nfs apply` run and make their
    binds): node layers, group layers, image directories, versions and the block dir.

    Such a directory sits on a bigger filesystem: every node's and group's layer on the state
    filesystem (`ops.statefs`), an image in HOME on the server's `/`. With
    `no_subtree_check` a node that may mount it forges a handle of that export's fsid and any
    inode/generation and reads, or writes, every file there (another node's layer; the
    server's `/etc/shadow`). knfsd checks nothing of the kind unless told.

    The check's caveat: a file renamed to another directory while a node holds its handle
    turns stale for that node; images and versions never change, and in a node's layer it is
    that node that renames. A file hard-linked across versions is found through the
    export's own link. A directory of a filesystem of its own keeps `no_subtree_check`: all a
    handle can name is the export. A server-side union and a masked view are overlayfs,
    which cannot check subtrees (a union's layers are filesystems of their own,
    `ops.union_fs`; the view's defences: `nfs.viewhandles` and `all_squash`)."""

    def shared(path: PurePosixPath) -> bool:
        return not is_filesystem_root(Path(path), mounts)

    images = tuple(i if i.view else dataclasses.replace(i, subtree_check=shared(i.path))
                   for i in ctx.images)
    nodes = tuple(dataclasses.replace(
        n, subtree_check=not n.server_union and shared(n.export_path)) for n in ctx.nodes)
    layers = tuple(dataclasses.replace(g, subtree_check=shared(g.path))
                   for g in ctx.group_layers)
    return dataclasses.replace(ctx, images=images, nodes=nodes, group_layers=layers)


def knfsd_layout(ctx: ClusterContext, views: dict[str, ViewSpec]
                 ) -> tuple[ClusterContext, tuple[JunctionBind, ...]]:
    """The context knfsd exports (`ctx` already has the views in place of their images, see
    `render.cluster.with_views`): the view of `/` as the NFSv4 root with the layers bound
    inside it, and the binds that make it so."""
    root = next((views[i.name] for i in ctx.images
                 if i.name in views and views[i.name].lower == Path("/")), None)
    if root is None:
        return ctx, ()
    binds: list[JunctionBind] = []

    def junction(path: PurePosixPath) -> PurePosixPath | None:
        """Where the export at `path` appears inside the view (None: outside it), noted."""
        target = _inside(root, path)
        if target is not None:
            binds.append(JunctionBind(source=Path(path), target=Path(target)))
        return target

    # An image's own fsid (its export id) stays: the same handles at its junction. A view's
    # export is its mount, not its image's tree: never bound (another live root keeps its own).
    images = [dataclasses.replace(i, v4_root=True) if views.get(i.name) is root
              else dataclasses.replace(i, path=t) if not i.view
              and (t := junction(i.path)) is not None else i for i in ctx.images]
    nodes = [dataclasses.replace(n, export_path=t, fixed_fsid=True)
             if (t := junction(n.export_path)) is not None else n for n in ctx.nodes]
    layers = [dataclasses.replace(g, path=t, fixed_fsid=True)
              if (t := junction(g.path)) is not None else g for g in ctx.group_layers]
    return (dataclasses.replace(ctx, images=tuple(images), nodes=tuple(nodes),
                                group_layers=tuple(layers)), tuple(binds))
