"""Node and group layers on disk: their directories and each node's generated identity.

`prepare_nodes(inv, paths)` is idempotent: run it after every inventory change (and before
exporting), it creates what is missing, repairs owners and modes in place, re-renders the
identity files that changed and never removes anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from oneroot.model.inventory import Inventory
from oneroot.ops.boot import node_image
from oneroot.ops.inventory import get_node, resolved
from oneroot.ops.paths import Paths
from oneroot.overlay import (
    IdentityStore,
    LayerDirs,
    NodeIdentity,
    ensure_layer,
    write_identity,
)
from oneroot.overlay.identity import SSH_KEY_TYPES


@dataclass(frozen=True, slots=True, kw_only=True)
class PreparedLayer:
    name: str
    dirs: LayerDirs
    dirs_changed: bool
    written: tuple[PurePosixPath, ...] = ()


def identity_dir(paths: Paths, node: str) -> Path:
    """Where a node's seed, SSH host keys and manifest live: under oneroot's home, which no
    export shows (the masked view empties it)."""
    return paths.home / "nodes" / node


def node_layer(inv: Inventory, node: str) -> LayerDirs:
    return LayerDirs.node(Path(str(inv.settings.state_dir)), node)


def group_layer(inv: Inventory, group: str) -> LayerDirs:
    return LayerDirs.group(Path(str(inv.settings.group_dir)), group)


def image_network_stacks(root: Path) -> tuple[bool, bool]:
    """(systemd-networkd, ifupdown) present in the image at `root`."""
    networkd = any((root / p).exists() for p in ("lib/systemd/systemd-networkd",
                                                  "usr/lib/systemd/systemd-networkd"))
    ifupdown = any((root / p).exists() for p in ("sbin/ifup", "usr/sbin/ifup"))
    return networkd, ifupdown


def node_identity(inv: Inventory, name: str, image_root: Path) -> NodeIdentity:
    node = get_node(inv, name)
    networkd, ifupdown = image_network_stacks(image_root)
    return NodeIdentity(name=node.name, address=node.address, macs=node.macs,
                        domain=inv.settings.domain, systemd_networkd=networkd,
                        ifupdown=ifupdown)


def prepare_node(inv: Inventory, paths: Paths, name: str, *,
                 image_root: Path | None = None, ssh_keygen: str = "ssh-keygen",
                 ssh_key_types: tuple[str, ...] = SSH_KEY_TYPES) -> PreparedLayer:
    """The node's `<state_dir>/<node>/{upper,work}` and its identity files in `upper/`.

    `image_root` overrides where the node's image is on disk (tests; images built elsewhere).
    """
    node = get_node(inv, name)
    root = image_root or Path(str(node_image(inv, resolved(inv, node)).root))
    dirs = node_layer(inv, name)
    changed = ensure_layer(dirs)
    result = write_identity(dirs, node_identity(inv, name, root),
                            IdentityStore(identity_dir(paths, name), ssh_keygen=ssh_keygen,
                                          key_types=ssh_key_types),
                            image_root=root)
    return PreparedLayer(name=name, dirs=dirs, dirs_changed=changed, written=result.written)


def prepare_nodes(inv: Inventory, paths: Paths, names: Iterable[str] | None = None, *,
                  image_root: Path | None = None,
                  ssh_key_types: tuple[str, ...] = SSH_KEY_TYPES) -> list[PreparedLayer]:
    return [prepare_node(inv, paths, n, image_root=image_root, ssh_key_types=ssh_key_types)
            for n in sorted(names if names is not None else inv.nodes)]


def prepare_group_layers(inv: Inventory) -> list[PreparedLayer]:
    """`<group_dir>/<group>/upper` for every group that is a layer (`group_layer=true`)."""
    out = []
    for name, group in sorted(inv.groups.items()):
        if group.values.get("group_layer") is True:
            dirs = group_layer(inv, name)
            out.append(PreparedLayer(name=name, dirs=dirs, dirs_changed=ensure_layer(dirs)))
    return out
