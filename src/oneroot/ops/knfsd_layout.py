"""How kernel nfsd serves the seed's `root=` lines verbatim (docs/nfs.md, "knfsd layout").

knfsd has no per-export pseudo path (ganesha's `Pseudo`), so the masked view of the server's
`/` becomes the NFSv4 root instead (`fsid=0`): a node's `server:/` is the view. Each node's and
group's layer is bound at its own junction inside the view (the empty directory the view keeps
at its real path, e.g. `<view>/var/state/systems/node01`) and exported there to its clients
alone, so `server:/var/state/systems/node01` names it over NFSv4. The view itself is exported
without `crossmnt`: another node walking to that path sees the empty junction, not the layer.
Pure: the binds are applied by `nfs.knfsd.bind_junctions`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path, PurePosixPath

from oneroot.nfs.knfsd import JunctionBind
from oneroot.nfs.view import ViewSpec
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


def knfsd_layout(ctx: ClusterContext, views: dict[str, ViewSpec]
                 ) -> tuple[ClusterContext, tuple[JunctionBind, ...]]:
    """The context knfsd exports (`ctx` already has the views in place of their images, see
    `render.cluster.with_views`): the view of `/` as the NFSv4 root with the layers bound
    inside it, and the binds that make it so."""
    root = next((views[i.name] for i in ctx.images
                 if i.name in views and views[i.name].lower == Path("/")), None)
    images = tuple(
        dataclasses.replace(i, v4_root=True) if root is not None and views.get(i.name) is root
        else i for i in ctx.images)
    if root is None:
        return dataclasses.replace(ctx, images=images), ()
    binds: list[JunctionBind] = []

    def junction(path: PurePosixPath) -> PurePosixPath | None:
        """Where the export at `path` appears inside the view (None: outside it), noted."""
        target = _inside(root, path)
        if target is not None:
            binds.append(JunctionBind(source=Path(path), target=Path(target)))
        return target

    nodes = [dataclasses.replace(n, export_path=t, fixed_fsid=True)
             if (t := junction(n.export_path)) is not None else n for n in ctx.nodes]
    layers = [dataclasses.replace(g, path=t, fixed_fsid=True)
              if (t := junction(g.path)) is not None else g for g in ctx.group_layers]
    return (dataclasses.replace(ctx, images=images, nodes=tuple(nodes),
                                group_layers=tuple(layers)), tuple(binds))
