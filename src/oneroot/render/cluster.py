"""Cluster-wide files: /etc/exports (kernel nfsd), the nfs-ganesha config, a dnsmasq config.

Both NFS configs come from one list, `nfs_exports(ctx)`, so they export the same directories to
the same clients:

- each image root `ro` to the cluster subnet, with `crossmnt` (filesystems mounted below it,
  such as a separate /usr or a masking view's submounts, are part of the root nodes see) and a
  fixed `fsid` (an overlayfs view has no UUID for knfsd to derive one from); a live root's
  masked view `all_squash` (every user nobody: a forged handle reads only world-readable
  files, docs/security.md);
- each node's diff-overlay dir `rw` to that node's address alone (`ro` for an ephemeral node,
  whose changes live in its tmpfs); for a server-side union node, its merged dir instead, an
  overlayfs mount, so with a fixed `fsid` too;
- each group layer dir `ro` and `root_squash` to the addresses of the group's nodes.

A node's own dir needs no `nohide`: the node mounts it directly, not by walking down from the
image root. Every export is `sync`; the image roots and node layers `no_root_squash`, as in the
seed (docs/security.md says why). With knfsd, every node layer, group layer, image directory,
version and block dir whose directory is not the root of a filesystem of its own is
`subtree_check` (`ops.knfsd_layout.check_subtrees` decides on the mount table, at its real
path or at its junction in the NFSv4 root view alike): node and group layers share the state
filesystem, images in HOME the server's `/`, and without the check a forged handle with the
export's fsid reaches every file of that filesystem (tests/e2e/test_knfsd.py). A server-side
union and a masked view are overlayfs, which cannot do subtree checks; the rest is
`no_subtree_check`.

An export's `fsid` is its export id, kept for life (`ops.exportids`): it never changes from one
render to the next and no two exports share one. A node's or group's plain directory gets none:
knfsd derives its filesystem id from the device's UUID, and switching to `fsid=` would turn the
handles its node holds stale.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath

from oneroot.errors import ConfigError
from oneroot.model import DhcpMode
from oneroot.render._env import render_template
from oneroot.render.context import ANON_ID, Access, ClusterContext, NfsExport

MAX_EXPORT_ID = 65535  # ganesha's Export_Id is 16 bits; 0 is its pseudo root


def needs_view(image_root: PurePosixPath, *, state_dir: PurePosixPath,
               group_dir: PurePosixPath) -> bool:
    """An image root is a live root, exported only through a masked view (`nfs.view`), when
    it is `/` or holds the state or group dir."""
    return image_root == PurePosixPath("/") or any(
        d == image_root or image_root in d.parents for d in (state_dir, group_dir))


def with_views(ctx: ClusterContext, views: Mapping[str, PurePosixPath]) -> ClusterContext:
    """`ctx` with each image named in `views` exported from its masked view's directory."""
    images = tuple(dataclasses.replace(i, path=views[i.name], view=True)
                   if i.name in views else i for i in ctx.images)
    return dataclasses.replace(ctx, images=images)


def _no_view_on_ceph(what: str, mount: PurePosixPath) -> ConfigError:
    return ConfigError(
        f"{what} is a live root, exported only through a masked view: with "
        "nfs_server=ganesha-ceph images live in CephFS, and a masked view of a live `/` has "
        "no CephFS equivalent",
        hint=f"make the image in CephFS (below {mount}): `oneroot image create NAME`, or "
             "`oneroot image use DIR --name NAME`; then `oneroot group set default image=NAME`")


def _check_no_live_root(ctx: ClusterContext) -> None:
    s = ctx.settings
    for image in ctx.images:
        live = needs_view(image.path, state_dir=s.state_dir, group_dir=s.group_dir)
        if ctx.ceph is not None and (live or image.view):
            raise _no_view_on_ceph(f"image {image.name} ({image.path})", ctx.ceph.mount)
        if not image.view and live:
            raise ConfigError(
                f"image {image.name} ({image.path}) is a live root: it is exported only "
                "through its masked view, never as it is",
                hint="render with the image's view (`oneroot render` and `oneroot nfs apply` "
                     "do); see `oneroot image show " + image.name + "`")


def nfs_exports(ctx: ClusterContext) -> tuple[NfsExport, ...]:
    """Every export of the cluster, image roots first, then nodes, then group layers.

    A group layer no node uses is left out: an exports line without clients would export the
    directory to the world. A live root (`/`) is refused unless it comes as its view.
    """
    _check_no_live_root(ctx)
    subnet = str(ctx.settings.subnet)
    exports = [
        NfsExport(
            export_id=image.export_id, path=image.path, access=Access.RO,
            clients=tuple(str(a) for a in image.clients) or (subnet,),
            comment=("EROFS files of union=block nodes" if image.block
                     else f"image {image.name}" + (" (masked view)" if image.view else "")),
            crossmnt=not image.v4_root, fsid=image.export_id, masked_view=image.view,
            v4_root=image.v4_root, all_squash=image.view, subtree_check=image.subtree_check,
        )
        for image in ctx.images
    ]
    exports.extend(
        NfsExport(
            export_id=node.export_id, path=node.export_path,
            access=Access.RO if node.read_only else Access.RW,
            clients=(str(node.address),),
            readers=tuple(str(a) for a in node.readers if a != node.address),
            comment=(f"server-side union of node {node.name}" if node.server_union
                     else f"diff-overlay of node {node.name}")
            + (" (ephemeral)" if node.read_only else ""),
            fsid=node.export_id if node.server_union or node.fixed_fsid else None,
            # overlayfs cannot make connectable handles ("use no_subtree_check"), and a
            # union is its own filesystem: ext4 handles of its layers do not decode there.
            subtree_check=node.subtree_check and not node.server_union,
        )
        for node in ctx.nodes
    )
    exports.extend(
        NfsExport(
            export_id=layer.export_id, path=layer.path, access=Access.RO,
            clients=tuple(str(a) for a in sorted(set(layer.clients))),
            comment=f"layer of group {layer.name}", root_squash=True,
            fsid=layer.export_id if layer.fixed_fsid else None,
            subtree_check=layer.subtree_check,
        )
        for layer in ctx.group_layers
        if layer.clients
    )
    _check_exports(exports)
    return tuple(exports)


def render_exports(ctx: ClusterContext) -> str:
    """/etc/exports for the kernel NFS server (apply with `exportfs -ra`)."""
    lines = [
        (export.comment, _exports_path(export.path),
         " ".join([f"{client}({export.knfsd_options})" for client in export.clients]
                  + [f"{reader}({export.knfsd_options_for(Access.RO)})"
                     for reader in export.readers]))
        for export in nfs_exports(ctx)
    ]
    return render_template("exports.j2", lines=lines)


def render_ganesha(ctx: ClusterContext) -> str:
    """nfs-ganesha config (FSAL VFS) with the same exports; pid and log paths are flags."""
    if not ctx.nfs_protocols or not set(ctx.nfs_protocols) <= {3, 4}:
        raise ConfigError(f"NFS protocols must be 3 and/or 4, not {ctx.nfs_protocols!r}")
    exports = nfs_exports(ctx)
    for export in exports:
        if '"' in str(export.path):
            raise ConfigError(f"nfs-ganesha cannot export a path containing '\"': {export.path}")
    return render_template(
        "ganesha.conf.j2", ctx=ctx, exports=exports, ceph=ctx.ceph, anon_id=ANON_ID,
        fsal_paths=cephfs_paths(ctx, exports) if ctx.ceph is not None else {},
        protocols=", ".join(str(p) for p in sorted(set(ctx.nfs_protocols))),
    )


def cephfs_paths(ctx: ClusterContext, exports: Iterable[NfsExport]
                  ) -> dict[PurePosixPath, PurePosixPath]:
    """ganesha-ceph: each export's path inside CephFS (its path below the CephFS mount).

    Everything exported must live in CephFS; a live root's masked view (an overlayfs of the
    server's own `/`) has no CephFS equivalent, so such an image is refused."""
    assert ctx.ceph is not None
    mount = ctx.ceph.mount
    out = {}
    for export in exports:
        if export.masked_view or export.v4_root:
            raise _no_view_on_ceph(export.comment, mount)
        if not export.path.is_relative_to(mount):
            raise ConfigError(
                f"{export.comment} ({export.path}) is outside CephFS ({mount}): with "
                "nfs_server=ganesha-ceph, images and layers live in CephFS",
                hint=f"set state_dir, group_dir and the image roots below {mount}")
        out[export.path] = PurePosixPath("/") / export.path.relative_to(mount)
    return out


def render_dnsmasq(ctx: ClusterContext) -> str:
    """dnsmasq as DHCP + TFTP server only (no DNS), for sites that keep dnsmasq.

    Addresses are static (`dhcp-host` per node; unknown machines get nothing). Firmware PXE
    gets the node's BIOS or UEFI loader by TFTP; iPXE (user class `iPXE` / option 175) gets the
    node's script URL. The tags are exclusive, so the order of `dhcp-boot` lines does not matter.
    """
    settings = ctx.settings
    if settings.dhcp_mode is not DhcpMode.FULL:
        raise ConfigError(
            "the dnsmasq config is rendered for dhcp_mode full only",
            hint="set dhcp_mode to full, or let `oneroot serve` answer as proxy DHCP",
        )
    for node in ctx.nodes:
        if node.address not in settings.subnet:
            raise ConfigError(f"node {node.name}'s address {node.address} is outside "
                              f"{settings.subnet}")
    return render_template(
        "dnsmasq.conf.j2", ctx=ctx, settings=settings,
        dns=",".join(str(a) for a in settings.dns),
    )


def _check_exports(exports: Iterable[NfsExport]) -> None:
    # An export's fsid, when it has one, is its export id: these checks keep fsids unique and
    # never 0 (knfsd's NFSv4 root) as well.
    ids: dict[int, NfsExport] = {}
    paths: dict[PurePosixPath, NfsExport] = {}
    roots = [e.comment for e in exports if e.v4_root]
    if len(roots) > 1:
        raise ConfigError(f"{' and '.join(roots)} would both be the NFSv4 root (fsid=0)",
                          hint="only one image can be the server's `/`")
    for export in exports:
        if not 1 <= export.export_id <= MAX_EXPORT_ID:
            raise ConfigError(
                f"export id {export.export_id} of {export.comment} is outside 1-{MAX_EXPORT_ID}")
        if not export.path.is_absolute():
            raise ConfigError(f"export path {export.path} of {export.comment} is not absolute")
        if (other := ids.setdefault(export.export_id, export)) is not export:
            raise ConfigError(
                f"{export.comment} and {other.comment} have the same export id "
                f"{export.export_id}", hint="export ids must be unique and stable")
        if (other := paths.setdefault(export.path, export)) is not export:
            raise ConfigError(
                f"{export.comment} and {other.comment} export the same path {export.path}")


def _exports_path(path: PurePosixPath) -> str:
    """exports(5) reads white space, `#` and `\\` in a path as octal escapes (`\\040`)."""
    return "".join(
        f"\\{ord(c):03o}" if c.isspace() or c in '#\\"' or not c.isprintable() else c
        for c in str(path)
    )
