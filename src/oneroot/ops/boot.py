"""What each node boots: its layers (`root=`), command line and boot files."""

from __future__ import annotations

from pathlib import PurePosixPath

from oneroot.model.cluster import Image, InitSystem, ResolvedNode, Settings
from oneroot.model.inventory import Inventory
from oneroot.rootspec import Mode, NfsLayer, RootSpec, TmpfsLayer, format_spec, parse


def node_image(inv: Inventory, r: ResolvedNode) -> Image:
    name = r.text("image")
    image = inv.images.get(name)
    if image is None:
        return Image(name=name, root=inv.settings.image_root, init_system=InitSystem.UNKNOWN)
    return image


def server_union(r: ResolvedNode) -> bool:
    """The node's layers are unioned on the server (`union=server`), not by its initramfs."""
    return r.values.get("union") == "server"


def union_merged_dir(s: Settings, node: str) -> PurePosixPath:
    """Where the server mounts a server-side union node's merged tree (and exports it from):
    inside the node's own directory, next to `upper/` and `work/`."""
    return s.diff_overlay_dir(node) / "merged"


def node_root_spec(inv: Inventory, r: ResolvedNode) -> RootSpec:
    """The node's layers, bottom-most first: image, extra layers, group layers, its own dir.

    The node's own directory is the rw top (the seed's line), or ro under a tmpfs when the
    node is ephemeral (the seed's `;ro;tmpfs`). A server-side union node mounts one layer,
    the merged tree the server exports to it (ro under a tmpfs when ephemeral).
    """
    s = inv.settings
    server = str(s.server_address)
    options = tuple(o for o in r.text("nfs_options").split(",") if o)
    if server_union(r):
        merged = NfsLayer(server=server, path=union_merged_dir(s, r.node.name),
                          mode=Mode.RO if r.flag("ephemeral") else Mode.RW, options=options)
        return RootSpec(layers=(merged, TmpfsLayer()) if r.flag("ephemeral") else (merged,))
    layers: list[NfsLayer | TmpfsLayer] = [
        NfsLayer(server=server, path=PurePosixPath(str(node_image(inv, r).root)),
                 mode=Mode.RO, options=options)
    ]
    for text in r.items("extra_layers"):
        for layer in parse(text).layers:
            if isinstance(layer, NfsLayer):
                layers.append(NfsLayer(server=layer.server, path=layer.path, mode=Mode.RO,
                                       options=layer.options or options))
    for group in r.node.groups:
        g = inv.groups.get(group)
        if g is not None and g.values.get("group_layer") is True:
            layers.append(NfsLayer(server=server, path=PurePosixPath(
                str(s.group_layer_dir(group))), mode=Mode.RO, options=options))
    own = PurePosixPath(str(s.diff_overlay_dir(r.node.name)))
    if r.flag("ephemeral"):
        layers.append(NfsLayer(server=server, path=own, mode=Mode.RO, options=options))
        layers.append(TmpfsLayer())
    else:
        layers.append(NfsLayer(server=server, path=own, mode=Mode.RW, options=options))
    return RootSpec(layers=tuple(layers))


def root_spec_text(inv: Inventory, r: ResolvedNode) -> str:
    return format_spec(node_root_spec(inv, r))
