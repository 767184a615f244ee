"""What each node boots: its layers (`root=`), command line and boot files."""

from __future__ import annotations

from pathlib import PurePosixPath

from oneroot.model.cluster import Image, InitSystem, ResolvedNode
from oneroot.model.inventory import Inventory
from oneroot.rootspec import Mode, NfsLayer, RootSpec, TmpfsLayer, format_spec, parse


def node_image(inv: Inventory, r: ResolvedNode) -> Image:
    name = r.text("image")
    image = inv.images.get(name)
    if image is None:
        return Image(name=name, root=inv.settings.image_root, init_system=InitSystem.UNKNOWN)
    return image


def node_root_spec(inv: Inventory, r: ResolvedNode) -> RootSpec:
    """The node's layers, bottom-most first: image, extra layers, group layers, its own dir.

    The node's own directory is the rw top (the seed's line), or ro under a tmpfs when the
    node is ephemeral (the seed's `;ro;tmpfs`).
    """
    s = inv.settings
    server = str(s.server_address)
    options = tuple(o for o in r.text("nfs_options").split(",") if o)
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
