"""The masked views of live roots (`nfs.view`) as the inventory defines them, kept current.

`image_view(inv, paths, name)` is the one place a view's spec is made from the inventory (the
image's `expose`, the state and group dirs, oneroot's home). `refresh_views` recomputes every
mounted view's masks and adds what is missing: `nfs apply` does it at each apply, and `oneroot
serve` every `view_rescan` seconds (a secret created while the view is up is hidden within that
time). `view_report` is what `oneroot image show` prints.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from oneroot.errors import NotFound
from oneroot.model.cluster import parse_image_ref
from oneroot.model.paths import Paths
from oneroot.model.resolved import ResolvedCluster
from oneroot.nfs.view import ViewSpec, ViewStatus, masks_of, mount_at, view_spec
from oneroot.nfs.view import update_view as _update_view
from oneroot.nfs.viewpolicy import Mask
from oneroot.render.cluster import needs_view

log = logging.getLogger(__name__)

VIEW_RESCAN_SECONDS = 30.0


def image_view(cluster: ResolvedCluster, paths: Paths, name: str, *, nodes: Iterable[str] = (),
               groups: Iterable[str] = (),
               exports: Iterable[PurePosixPath] = ()) -> ViewSpec | None:
    """The view image `name` is exported through, or None when it is exported as it is.
    `exports`: the other exports' paths (those in oneroot's home get a junction)."""
    ref = parse_image_ref(name)
    image = cluster.images.get(ref.name)
    if image is None:
        raise NotFound(f"no image named {name!r}", hint="see `oneroot image list`")
    if ref.version not in (None, 1):
        return None  # versions are made by oneroot, never a live root
    s = cluster.settings
    if not needs_view(image.root, state_dir=s.state_dir, group_dir=s.group_dir):
        return None
    return view_spec(name, lower=Path(image.root), views_dir=paths.views_dir,
                     state_dir=s.state_dir, group_dir=s.group_dir, nodes=nodes, groups=groups,
                     hidden_dirs=[PurePosixPath(paths.home)], expose=image.expose,
                     exports=exports)


def refresh_views(specs: Iterable[ViewSpec]) -> list[ViewStatus]:
    """Bring every mounted view among `specs` up to date (new secrets, new junctions)."""
    return [_update_view(spec) for spec in specs if mount_at(spec.mountpoint) is not None]


@dataclass(frozen=True, slots=True, kw_only=True)
class ViewReport:
    spec: ViewSpec
    mounted: bool
    masks: tuple[Mask, ...]


def view_report(cluster: ResolvedCluster, paths: Paths, name: str) -> ViewReport | None:
    spec = image_view(cluster, paths, name)
    if spec is None:
        return None
    return ViewReport(spec=spec, mounted=mount_at(spec.mountpoint) is not None,
                      masks=tuple(masks_of(spec)))
