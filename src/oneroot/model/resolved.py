"""One inventory, resolved: every node's merged profile and image, looked up once per load.

`resolve_cluster(inv)` is pure and never raises (an inventory that fails validation still
resolves: unknown groups are skipped, an unknown image boots the settings' image root), so
`doctor` can resolve what it reports on. Everything below the CLI and the server takes the
`ResolvedCluster`, never the raw inventory plus a name to look up again.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from oneroot.errors import NotFound
from oneroot.model.cluster import Group, Image, ResolvedNode, Runlevel, Settings, resolve
from oneroot.model.inventory import Inventory
from oneroot.model.paths import ClusterDirs
from oneroot.net import MacAddress


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedCluster:
    inventory: Inventory
    dirs: ClusterDirs
    nodes: Mapping[str, ResolvedNode]  # by name, sorted
    by_mac: Mapping[MacAddress, str]
    layer_groups: frozenset[str]  # groups that are a layer of their own (`group_layer=true`)

    @property
    def settings(self) -> Settings:
        return self.inventory.settings

    @property
    def groups(self) -> Mapping[str, Group]:
        return self.inventory.groups

    @property
    def images(self) -> Mapping[str, Image]:
        return self.inventory.images

    @property
    def runlevels(self) -> Mapping[str, Runlevel]:
        return self.inventory.runlevels

    def node(self, name: str) -> ResolvedNode:
        try:
            return self.nodes[name]
        except KeyError:
            raise NotFound(f"no node named {name!r}", hint="see `oneroot node list`") from None

    def node_for_mac(self, mac: MacAddress) -> ResolvedNode | None:
        name = self.by_mac.get(mac)
        return self.nodes[name] if name else None

    def group_layers(self, r: ResolvedNode) -> Iterator[str]:
        """The node's groups that are layers, in the node's order (bottom first)."""
        return (g for g in r.node.groups if g in self.layer_groups)

    def union_nodes(self) -> list[str]:
        """The nodes whose layers the server unions (`union=server`), by name."""
        return [name for name, r in self.nodes.items() if r.profile.server_union]

    def images_in_use(self) -> set[str]:
        """Names of the images some node boots (any version)."""
        return {r.image.name for r in self.nodes.values()}

    def versions_in_use(self) -> dict[str, Image]:
        """Each image version some node boots next, by `NAME@N` (`NAME` for an image with no
        versions stored), as `Image.at(N)` values."""
        out: dict[str, Image] = {}
        for r in self.nodes.values():
            if r.image.name in self.images:
                out.setdefault(r.image.ref, r.image)
        return dict(sorted(out.items()))


def resolve_cluster(inv: Inventory) -> ResolvedCluster:
    s = inv.settings
    nodes = {name: resolve(node, inv.groups, images=inv.images, image_root=s.image_root)
             for name, node in sorted(inv.nodes.items())}
    return ResolvedCluster(
        inventory=inv, dirs=ClusterDirs.of(s), nodes=nodes,
        by_mac={mac: node.name for node in inv.nodes.values() for mac in node.macs},
        layer_groups=frozenset(name for name, g in inv.groups.items()
                               if g.values.get("group_layer") is True))

